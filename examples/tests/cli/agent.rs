//! `wgm-agent` as operators run it: a process per host inside a network namespace,
//! driving wireguard-go, while the CLI outside writes to the shared store. Opt-in with
//! `WGM_TEST_NETNS=1` (root, `ip`, `wireguard-go`, `wg`); the PostgreSQL test also needs
//! `WGM_TEST_POSTGRES_URL` and `psql`.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use wgm_test_support::{require, Suite};

use crate::harness::Env;
use crate::live::{iface, Netns};
use crate::postgres::Database;

/// A PostgreSQL endpoint the agents in namespaces can reach: a unix socket in the test's
/// directory (sockets are files, reachable from every network namespace) forwarded to
/// the server's TCP address. [`PgProxy::cut`] drops every connection and stops
/// accepting until [`PgProxy::restore`]: a store outage for the agents only, while the
/// CLI keeps writing over TCP and the server itself (shared with other tests) runs on.
struct PgProxy {
    dir: PathBuf,
    target: String,
    state: Arc<Mutex<ProxyState>>,
}

#[derive(Default)]
struct ProxyState {
    up: bool,
    conns: Vec<std::net::TcpStream>,
}

impl PgProxy {
    fn start(env: &Env, admin_url: &str) -> PgProxy {
        // host:port of the admin URL (postgres://user@host:port/db?…).
        let after = &admin_url[admin_url.find("://").unwrap() + 3..];
        let hostport = after.split(['/', '?']).next().unwrap();
        let hostport = hostport.rsplit('@').next().unwrap();
        let target = if hostport.contains(':') {
            hostport.to_owned()
        } else {
            format!("{hostport}:5432")
        };
        let dir = env.path("pg");
        std::fs::create_dir_all(&dir).unwrap();
        let p = PgProxy {
            dir,
            target,
            state: Arc::new(Mutex::new(ProxyState::default())),
        };
        p.restore();
        p
    }

    /// The database URL through the proxy's socket.
    fn url(&self, db_url: &str) -> String {
        let sep = if db_url.contains('?') { '&' } else { '?' };
        format!("{db_url}{sep}host={}", self.dir.display())
    }

    fn socket(&self) -> PathBuf {
        let port = self.target.rsplit(':').next().unwrap();
        self.dir.join(format!(".s.PGSQL.{port}"))
    }

    fn restore(&self) {
        let _ = std::fs::remove_file(self.socket());
        let listener = std::os::unix::net::UnixListener::bind(self.socket()).unwrap();
        self.state.lock().unwrap().up = true;
        let state = self.state.clone();
        let target = self.target.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if !state.lock().unwrap().up {
                    break; // cut: the listener goes with this thread
                }
                let Ok(client) = conn else { break };
                let Ok(server) = std::net::TcpStream::connect(&target) else {
                    continue;
                };
                state
                    .lock()
                    .unwrap()
                    .conns
                    .push(server.try_clone().unwrap());
                let (mut c1, mut s1) = (client.try_clone().unwrap(), server.try_clone().unwrap());
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

    /// Drop every connection and refuse new ones.
    fn cut(&self) {
        let mut st = self.state.lock().unwrap();
        st.up = false;
        for c in st.conns.drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        drop(st);
        // Wake the accept loop so that it sees the cut and drops the listener.
        let _ = std::os::unix::net::UnixStream::connect(self.socket());
        let _ = std::fs::remove_file(self.socket());
    }
}

impl Drop for PgProxy {
    fn drop(&mut self) {
        self.cut();
    }
}

/// One agent process in a namespace, its standard error kept in a file.
struct AgentProc {
    child: Child,
    log: PathBuf,
}

impl AgentProc {
    fn start(env: &Env, ns: &Netns, store: &str, host: &str, tag: &str) -> AgentProc {
        let log = env.path(&format!("agent-{tag}.log"));
        let err = std::fs::File::create(&log).unwrap();
        let child = agent_cmd(env, ns, store, host)
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap();
        AgentProc { child, log }
    }

    fn log(&self) -> String {
        let mut s = String::new();
        std::fs::File::open(&self.log)
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        s
    }

    /// SIGTERM, and the exit status (bounded wait).
    fn terminate(mut self) -> (i32, String) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return (st.code().unwrap_or(-1), self.log());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the agent did not stop on SIGTERM: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        // Only our own child, by its pid.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `ip netns exec NS wgm-agent` on `store`, as host `host`, wireguard-go.
fn agent_cmd(env: &Env, ns: &Netns, store: &str, host: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &ns.name])
        .arg(env!("CARGO_BIN_EXE_wgm-agent"))
        .env_remove("WGM_AGENT_CONFIG")
        .env("HOME", env.path("home"))
        .env("WGM_STORE", store)
        .env("WGM_MASTER_KEY_FILE", &env.key)
        .env("WGM_AGENT_HOST", host)
        .env("WGM_AGENT_BACKEND", "userspace")
        .env("WGM_AGENT_SERVERS", "assigned")
        .env("WGM_AGENT_HEARTBEAT_INTERVAL", "1")
        .env("WGM_AGENT_LEASE_TTL", "10")
        .env("WGM_AGENT_RECONCILE_INTERVAL", "5")
        // Debug lines of the library and the agent: what a failure prints says why.
        .env("WGM_LOG", "info,wgm_core=debug,wgm_cli=debug")
        .stdin(Stdio::null());
    c
}

fn wait_for(what: &str, secs: u64, f: impl FnMut() -> bool) {
    wait_for_or(what, secs, f, String::new);
}

/// [`wait_for`], with what `context` says in the failure (the agents' logs).
fn wait_for_or(what: &str, secs: u64, mut f: impl FnMut() -> bool, context: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out after {secs} s waiting for {what}\n{}", context());
}

/// The reported state of `host` for `server`: (applied, converged, instance).
fn reported(env: &Env, store: &str, server: &str, host: &str) -> Option<(u64, bool, Value)> {
    let out = env
        .bare()
        .args(["--store", store, "--master-key-file"])
        .arg(&env.key)
        .args(["--json", "status", server, "--reported"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == host)
        .map(|h| {
            (
                h["applied"].as_u64().unwrap_or(0),
                h["converged"].as_bool().unwrap(),
                h["instance"].clone(),
            )
        })
}

fn wgm(env: &Env, store: &str, args: &[&str]) -> String {
    let out = env
        .bare()
        .args(["--store", store, "--master-key-file"])
        .arg(&env.key)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "wgm {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn head(env: &Env, store: &str, server: &str) -> u64 {
    let v: Value =
        serde_json::from_str(&wgm(env, store, &["--json", "server", "show", server])).unwrap();
    v["revision"].as_u64().unwrap()
}

/// Run `args` inside namespace `ns`; its output (failure panics with stderr).
fn in_ns(ns: &str, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?} in {ns}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A WireGuard client in namespace `client` for peer `peer` of `server`, which runs in
/// `host_ns`: a veth pair between the two (underlay `192.168.N.0/30`, the server's
/// endpoint `.1`), wireguard-go in the client namespace set up from the config the
/// library renders (`wg-quick strip`, `wg setconf`, addresses and routes as wg-quick
/// would), split tunnel. Returns the server's tunnel addresses (IPv6, IPv4) and the
/// client's daemon.
fn client_tunnel(
    env: &Env,
    store: &str,
    client: &mut Netns,
    host_ns: &Netns,
    server: &str,
    n: u8,
) -> (String, String, Daemon) {
    let (veth_c, veth_s) = (
        format!("wgmc{n}x{}", std::process::id() % 10_000),
        format!("wgms{n}x{}", std::process::id() % 10_000),
    );
    let ok = Command::new("ip")
        .args([
            "-n",
            &client.name,
            "link",
            "add",
            &veth_c,
            "type",
            "veth",
            "peer",
            "name",
        ])
        .args([&veth_s, "netns", &host_ns.name])
        .status()
        .unwrap()
        .success();
    assert!(ok, "veth pair");
    let (net_c, net_s) = (format!("192.168.{n}.2/30"), format!("192.168.{n}.1/30"));
    for (ns, dev, addr) in [
        (&client.name, &veth_c, &net_c),
        (&host_ns.name, &veth_s, &net_s),
    ] {
        in_ns(ns, &["ip", "addr", "add", addr, "dev", dev]);
        in_ns(ns, &["ip", "link", "set", dev, "up"]);
    }
    let port = {
        let v: Value =
            serde_json::from_str(&wgm(env, store, &["--json", "server", "show", server])).unwrap();
        v["listen_port"].as_u64().unwrap()
    };
    wgm(
        env,
        store,
        &[
            "server",
            "set",
            server,
            "--endpoint",
            &format!("192.168.{n}.1:{port}"),
            "--tunnel",
            "split",
        ],
    );
    wgm(env, store, &["peer", "add", server, "client"]);
    let text = wgm(env, store, &["peer", "config", server, "client"]);
    let conf = env.path(&format!("client-{server}.conf"));
    std::fs::write(&conf, &text).unwrap();
    let stripped = Command::new("wg-quick")
        .arg("strip")
        .arg(&conf)
        .output()
        .unwrap();
    assert!(
        stripped.status.success(),
        "{}",
        String::from_utf8_lossy(&stripped.stderr)
    );
    let setconf = env.path(&format!("client-{server}.setconf"));
    std::fs::write(&setconf, &stripped.stdout).unwrap();
    let dev = format!("wgmcl{n}x{}", std::process::id() % 10_000);
    client.ifaces.push(dev.clone());
    let daemon = Command::new("ip")
        .args(["netns", "exec", &client.name, "wireguard-go", "-f", &dev])
        .env("WG_PROCESS_FOREGROUND", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let daemon = Daemon(daemon);
    let sock = format!("/var/run/wireguard/{dev}.sock");
    wait_for("the client's wireguard-go", 10, || {
        std::os::unix::net::UnixStream::connect(&sock).is_ok()
    });
    in_ns(
        &client.name,
        &["wg", "setconf", &dev, setconf.to_str().unwrap()],
    );
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default();
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        for item in v.split(',').map(str::trim).filter(|x| !x.is_empty()) {
            match k.trim() {
                "Address" if item.contains(':') => {
                    in_ns(
                        &client.name,
                        &["ip", "addr", "add", item, "dev", &dev, "nodad"],
                    );
                }
                "Address" => {
                    in_ns(&client.name, &["ip", "addr", "add", item, "dev", &dev]);
                }
                _ => {}
            }
        }
    }
    in_ns(&client.name, &["ip", "link", "set", &dev, "up"]);
    for line in text.lines() {
        if let Some(v) = line.trim().strip_prefix("AllowedIPs") {
            for net in v
                .trim_start_matches([' ', '='])
                .split(',')
                .map(str::trim)
                .filter(|x| !x.is_empty())
            {
                in_ns(&client.name, &["ip", "route", "replace", net, "dev", &dev]);
            }
        }
    }
    let v: Value =
        serde_json::from_str(&wgm(env, store, &["--json", "server", "show", server])).unwrap();
    (
        v["address_v6"].as_str().unwrap().to_owned(),
        v["address_v4"].as_str().unwrap().to_owned(),
        daemon,
    )
}

/// A daemon this test started, stopped (by its pid) and reaped on drop.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One ping from `ns` to `target` (`ping -6` for IPv6) answered within 2 s.
fn pings(ns: &str, target: &str) -> bool {
    let mut args = vec!["netns", "exec", ns, "ping"];
    if target.contains(':') {
        args.push("-6");
    }
    args.extend(["-c", "1", "-W", "2", target]);
    Command::new("ip")
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// SQLite on one host: the agent applies what the CLI writes; a second agent is
/// refused; `kill -9` in the middle of 50 changes and a restart converge to the head
/// on the same device; SIGTERM exits 0 and leaves the tunnel up.
#[test]
fn the_agent_follows_the_cli_survives_kill_9_and_refuses_a_second_one() {
    let Some(_netns) = require(Suite::Netns, &["ip", "wireguard-go", "wg"]) else {
        return;
    };
    let env = Env::new();
    let store = env.store.clone();
    let mut ns = Netns::new("agent");
    let name = iface("ag");
    ns.ifaces.push(name.clone());
    wgm(
        &env,
        &store,
        &[
            "server",
            "create",
            "office",
            "--listen-port",
            "51830",
            "--interface",
            &name,
            "--ipv4",
            "10.9.0.0/24",
            "--host",
            "h1",
        ],
    );
    for p in ["alice", "bob", "carol"] {
        wgm(&env, &store, &["peer", "add", "office", p]);
    }
    let agent = AgentProc::start(&env, &ns, &store, "h1", "1");
    wait_for("the first pass", 30, || ns.wg_peers(&name).len() == 3);

    wgm(&env, &store, &["peer", "add", "office", "dave"]);
    wait_for("dave on the device", 20, || ns.wg_peers(&name).len() == 4);
    let h = head(&env, &store, "office");
    wait_for(
        "a report at the head",
        20,
        || matches!(reported(&env, &store, "office", "h1"), Some((a, true, _)) if a == h),
    );
    let (_, _, instance) = reported(&env, &store, "office", "h1").unwrap();
    assert!(!instance.is_null(), "the device instance is reported");
    let text = wgm(&env, &store, &["status", "office", "--reported"]);
    assert!(text.contains("h1") && text.contains("up to date"), "{text}");

    // Drift: a peer removed by hand (`wg set … remove`) is put back by the periodic
    // pass (every 5 s here), without a change in the store.
    let victim = ns.wg_peers(&name)[0].clone();
    in_ns(&ns.name, &["wg", "set", &name, "peer", &victim, "remove"]);
    assert_eq!(ns.wg_peers(&name).len(), 3);
    wait_for("the removed peer restored by the periodic pass", 20, || {
        ns.wg_peers(&name).contains(&victim)
    });

    // A second agent for the same server and host refuses to run (exit 4).
    let out = agent_cmd(&env, &ns, &store, "h1").output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is applied by agent h1/"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // 50 changes; the agent is killed with SIGKILL after the 20th and started again.
    let mut agent = Some(agent);
    let mut restarted = None;
    for i in 0..50 {
        wgm(&env, &store, &["peer", "add", "office", &format!("p{i}")]);
        if i == 20 {
            let mut a = agent.take().unwrap();
            a.child.kill().unwrap(); // SIGKILL
            a.child.wait().unwrap();
            restarted = Some(AgentProc::start(&env, &ns, &store, "h1", "2"));
        }
    }
    let restarted = restarted.unwrap();
    wait_for("all 54 peers after the restart", 30, || {
        ns.wg_peers(&name).len() == 54
    });
    let h = head(&env, &store, "office");
    wait_for(
        "the restarted agent's report at the head",
        20,
        || matches!(reported(&env, &store, "office", "h1"), Some((a, true, _)) if a == h),
    );
    let (_, _, after) = reported(&env, &store, "office", "h1").unwrap();
    assert_eq!(
        after, instance,
        "the device was not recreated: tunnels survived"
    );
    assert!(
        restarted
            .log()
            .contains("taking over the lease of an agent that is gone"),
        "{}",
        restarted.log()
    );

    // SIGTERM: exit 0, leases released, the device stays.
    let (code, log) = restarted.terminate();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("tunnels stay up"), "{log}");
    assert_eq!(
        ns.wg_peers(&name).len(),
        54,
        "the tunnel stays up after the agent exits"
    );
    // Released: a new agent starts at once (no lease to wait out).
    let again = AgentProc::start(&env, &ns, &store, "h1", "3");
    wgm(&env, &store, &["peer", "remove", "office", "alice"]);
    // The agent's first pass may run while the removal commits: it used to record the
    // new revision with alice still on the device and then leave her there for good
    // (`wgm-core/tests/reconcile.rs`, `a_removal_committed_during_an_apply_is_applied_by_the_next_one`).
    // The bound is generous for loaded CI runs; the agent's log says why if it times out.
    wait_for_or(
        "alice removed",
        60,
        || ns.wg_peers(&name).len() == 53,
        || again.log(),
    );
    let (code, log) = again.terminate();
    assert_eq!(code, 0, "{log}");
    for line in log.lines() {
        assert!(
            !line.contains("PrivateKey") && !line.contains("private_key"),
            "{line}"
        );
    }
}

/// PostgreSQL, two hosts: each agent applies its own server; the CLI outside changes
/// both; cut notifications are caught up from the log; a 10-second outage of the store
/// leaves the tunnels up and is caught up when the store returns; a second agent for a
/// server and host is refused.
#[test]
fn two_hosts_on_postgresql_converge_survive_lost_notifications_and_an_outage() {
    let Some(_netns) = require(Suite::Netns, &["ip", "wireguard-go", "wg"]) else {
        return;
    };
    let Some(pg) = require(Suite::Postgres, &["psql"]) else {
        return;
    };
    let db = Database::create(pg.url());
    let store = db.url();
    let env = Env::new();
    let proxy = PgProxy::start(&env, pg.url());
    let agents_store = proxy.url(&store);
    let mut ns1 = Netns::new("agent-h1");
    let mut ns2 = Netns::new("agent-h2");
    let (if1, if2) = (iface("h1"), iface("h2"));
    ns1.ifaces.push(if1.clone());
    ns2.ifaces.push(if2.clone());
    wgm(
        &env,
        &store,
        &[
            "server",
            "create",
            "fra",
            "--listen-port",
            "51831",
            "--interface",
            &if1,
            "--ipv4",
            "10.10.0.0/24",
            "--host",
            "h1",
        ],
    );
    wgm(
        &env,
        &store,
        &[
            "server",
            "create",
            "ams",
            "--listen-port",
            "51832",
            "--interface",
            &if2,
            "--ipv4",
            "10.11.0.0/24",
            "--host",
            "h2",
        ],
    );
    let mut a1 = AgentProc::start(&env, &ns1, &agents_store, "h1", "h1");
    let a2 = AgentProc::start(&env, &ns2, &agents_store, "h2", "h2");
    let logs = || format!("h1: {}\nh2: {}", a1.log(), a2.log());
    let counts =
        |n1: usize, n2: usize| ns1.wg_peers(&if1).len() == n1 && ns2.wg_peers(&if2).len() == n2;
    for i in 0..5 {
        wgm(&env, &store, &["peer", "add", "fra", &format!("f{i}")]);
        wgm(&env, &store, &["peer", "add", "ams", &format!("a{i}")]);
    }
    wait_for_or("both hosts converge", 30, || counts(5, 5), logs);
    // A client in a third namespace with a tunnel to each server: the changes the CLI
    // makes reach both hosts, and traffic flows through each (IPv6 and IPv4).
    let mut client = Netns::new("agent-cl");
    let to_fra = client_tunnel(&env, &store, &mut client, &ns1, "fra", 71);
    let to_ams = client_tunnel(&env, &store, &mut client, &ns2, "ams", 72);
    wait_for_or("both client peers applied", 30, || counts(6, 6), logs);
    for target in [&to_fra.0, &to_fra.1, &to_ams.0, &to_ams.1] {
        wait_for_or(
            &format!("a ping to {target} through its tunnel"),
            20,
            || pings(&client.name, target),
            logs,
        );
    }
    wgm(&env, &store, &["peer", "remove", "fra", "f0"]);
    wgm(&env, &store, &["peer", "disable", "ams", "a0"]);
    wait_for_or("removal and disable", 30, || counts(5, 5), logs);
    // Each host holds only its own server: no link of the other's in its namespace
    // (wireguard-go's UAPI sockets share /var/run/wireguard, so `wg show` cannot tell).
    let has_link = |ns: &Netns, i: &str| {
        Command::new("ip")
            .args(["-n", &ns.name, "link", "show", i])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    };
    assert!(has_link(&ns1, &if1) && has_link(&ns2, &if2));
    assert!(!has_link(&ns1, &if2) && !has_link(&ns2, &if1));

    // Cut the agents' listening sessions: the notification of the next change is lost,
    // and the feed's reconnect (or the periodic pass) catches up from the log.
    let cut = Command::new("psql")
        .args([
            store.as_str(),
            "-qAtc",
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid() \
             AND query LIKE 'LISTEN%'",
        ])
        .output()
        .unwrap();
    let n: u32 = String::from_utf8_lossy(&cut.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    assert!(n >= 2, "listening sessions cut: {n}");
    wgm(&env, &store, &["peer", "add", "fra", "late"]);
    wgm(&env, &store, &["peer", "add", "ams", "late"]);
    wait_for_or("caught up after the cut", 30, || counts(6, 6), logs);

    // The store goes away for the agents for 10 s while the CLI keeps changing it.
    proxy.cut();
    let cut_at = Instant::now();
    wgm(&env, &store, &["peer", "add", "fra", "during-1"]);
    wgm(&env, &store, &["peer", "add", "ams", "during-1"]);
    wgm(&env, &store, &["peer", "remove", "fra", "f1"]);
    while cut_at.elapsed() < Duration::from_secs(10) {
        // Tunnels stay as they are, and carry traffic, while the agents cannot reach
        // the store.
        assert!(
            counts(6, 6),
            "a device changed during the outage: {} / {}\n{}",
            ns1.wg_peers(&if1).len(),
            ns2.wg_peers(&if2).len(),
            logs()
        );
        assert!(
            pings(&client.name, &to_fra.0) && pings(&client.name, &to_ams.1),
            "a tunnel broke during the outage"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_for_or(
        "the outage reported",
        10,
        || a1.log().contains("store unavailable") && a2.log().contains("store unavailable"),
        logs,
    );
    proxy.restore();
    wait_for_or(
        "converged after the store returned",
        60,
        || counts(6, 7),
        logs,
    );
    assert!(pings(&client.name, &to_fra.1) && pings(&client.name, &to_ams.0));
    wait_for_or(
        "the return reported",
        10,
        || a1.log().contains("store available again"),
        logs,
    );
    for a in [&a1, &a2] {
        let log = a.log();
        assert_eq!(
            log.matches("store unavailable").count(),
            1,
            "one line when the store goes, not one per retry: {log}"
        );
    }
    let h = head(&env, &store, "fra");
    wait_for_or(
        "fra reported at its head",
        20,
        || matches!(reported(&env, &store, "fra", "h1"), Some((a, true, _)) if a == h),
        logs,
    );

    // A second agent for fra on h1 is refused on PostgreSQL too.
    let out = agent_cmd(&env, &ns1, &agents_store, "h1").output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // `kill -9` of h1's agent in the middle of 50 changes, and a restart: it converges
    // to the head with every change once, on the same device, and the client's live
    // tunnel (its handshake, its traffic) survives.
    let client_key = {
        let v: Value = serde_json::from_str(&wgm(
            &env,
            &store,
            &["--json", "peer", "show", "fra", "client"],
        ))
        .unwrap();
        v["public_key"].as_str().unwrap().to_owned()
    };
    assert!(pings(&client.name, &to_fra.0));
    let handshake = |ns: &Netns| -> u64 {
        in_ns(&ns.name, &["wg", "show", &if1, "latest-handshakes"])
            .lines()
            .find_map(|l| l.strip_prefix(client_key.as_str()))
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0)
    };
    let before = handshake(&ns1);
    assert!(before > 0, "the client has a handshake with fra");
    let (_, _, instance) = reported(&env, &store, "fra", "h1").unwrap();
    let peers_before = ns1.wg_peers(&if1).len();
    let mut restarted = None;
    for i in 0..50 {
        wgm(&env, &store, &["peer", "add", "fra", &format!("k{i}")]);
        if i == 20 {
            a1.child.kill().unwrap(); // SIGKILL
            a1.child.wait().unwrap();
            restarted = Some(AgentProc::start(
                &env,
                &ns1,
                &agents_store,
                "h1",
                "h1-again",
            ));
        }
    }
    let a1 = restarted.unwrap();
    wait_for_or(
        "all 50 after the restart",
        30,
        || ns1.wg_peers(&if1).len() == peers_before + 50,
        || a1.log(),
    );
    let h = head(&env, &store, "fra");
    wait_for_or(
        "fra reported at its head by the new agent",
        20,
        || matches!(reported(&env, &store, "fra", "h1"), Some((a, true, _)) if a == h),
        || a1.log(),
    );
    assert_eq!(
        reported(&env, &store, "fra", "h1").unwrap().2,
        instance,
        "the device was recreated"
    );
    assert!(
        a1.log()
            .contains("taking over the lease of an agent that is gone"),
        "{}",
        a1.log()
    );
    assert!(handshake(&ns1) >= before, "the client's session was reset");
    assert!(pings(&client.name, &to_fra.1), "the client's tunnel broke");

    for a in [a1, a2] {
        let (code, log) = a.terminate();
        assert_eq!(code, 0, "{log}");
    }
}
