//! The firewall policy end to end, through real WireGuard tunnels. `wgm apply --backend
//! userspace --firewall nft`, run inside a server namespace, drives wireguard-go and the
//! nftables table `inet wgm`; traffic from WireGuard clients in namespaces of their own
//! then shows the policy at work: allow lists and the default verdict, peer-to-peer,
//! masquerading per family, a quota and its counters in `wgm status`, rate limits, peers
//! whose counters survive other peers' applies, and a host table no apply touches.
//!
//! Opt-in with `WGM_TEST_NETNS=1` (root, `ip`, `wireguard-go`, `wg`, `nft`, `ping`,
//! `sysctl`); with the switch on, anything missing fails the test. Each test builds its
//! own namespaces (named after the test and the process id), removed on every exit path,
//! and traffic never leaves them:
//!
//! ```text
//! client 1  wg: 10.8.0.2, fd12:3456:789a:1::2 ── s0 192.168.101.2 ─┐
//! client 2  wg: 10.8.0.3, fd12:3456:789a:1::3 ── s0 192.168.102.2 ─┤ WireGuard (UDP 51820)
//!                                                                  │
//! server    c1 192.168.101.1, c2 192.168.102.1 ◄───────────────────┘
//!           wireguard-go IFACE (wgm): 10.8.0.1, fd12:3456:789a:1::1; forwarding on
//!           up0 10.99.0.1, fd99::1 ── upstream u0: 10.99.0.2, 10.99.0.3, fd99::2, fd99::3
//! ```
//!
//! The upstream routes the tunnel's networks back through the server, so a source it sees
//! is the peer's own address unless the server masquerades. Sockets of the test (TCP
//! listeners and connections, UDP senders and receivers) are opened inside a namespace on
//! a helper thread (`setns(2)`) and keep belonging to it.

use std::fs::File;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;
use serde_json::Value;
use wgm_test_support::{require, Suite};

use crate::harness::{Env, Run};
use crate::live::{iface, Netns};

const TOOLS: &[&str] = &["ip", "wireguard-go", "wg", "nft", "ping", "sysctl"];

const SERVER: &str = "office";
const PORT: u16 = 51820;
/// An upstream host that allow lists permit.
const UP4: &str = "10.99.0.2";
const UP6: &str = "fd99::2";
/// An upstream host that allow lists never permit.
const OTHER4: &str = "10.99.0.3";
const OTHER6: &str = "fd99::3";
/// The server's addresses on the upstream link: the source of masqueraded traffic.
const SRV_UP4: &str = "10.99.0.1";
const SRV_UP6: &str = "fd99::1";

/// A byte count as a float, for rates (exact below 2^53).
#[allow(clippy::cast_precision_loss)]
fn float(n: u64) -> f64 {
    n as f64
}

fn ip_addr(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `ip -n NS ARGS...`.
fn ip(ns: &Netns, args: &[&str]) {
    let mut all = vec!["-n", ns.name.as_str()];
    all.extend_from_slice(args);
    ok("ip", &all);
}

/// `ip netns exec NS ARGS...`.
fn exec(ns: &Netns, args: &[&str]) -> Output {
    let mut all = vec!["netns", "exec", ns.name.as_str()];
    all.extend_from_slice(args);
    run("ip", &all)
}

fn exec_ok(ns: &Netns, args: &[&str]) -> String {
    let out = exec(ns, args);
    assert!(
        out.status.success(),
        "{args:?} in {}: {}",
        ns.name,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sysctl(ns: &Netns, key: &str, value: &str) {
    exec_ok(ns, &["sysctl", "-qw", &format!("{key}={value}")]);
}

/// A namespace for this test, without duplicate address detection on the links made
/// later (IPv6 works at once).
fn namespace(tag: &str) -> Netns {
    let ns = Netns::new(tag);
    sysctl(&ns, "net.ipv6.conf.default.accept_dad", "0");
    sysctl(&ns, "net.ipv6.conf.all.accept_dad", "0");
    ns
}

/// Runs `f` on a helper thread inside `ns` (`setns(2)` changes the calling thread's
/// namespace only). A socket belongs to the namespace it was created in for its whole
/// life, whichever thread uses it later.
fn in_netns<R: Send>(ns: &Netns, f: impl FnOnce() -> R + Send) -> R {
    let file = File::open(format!("/run/netns/{}", ns.name)).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(&file, CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}

/// A process this test started, stopped by its pid and reaped on drop.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// ---------------------------------------------------------------------------------------
// Probes
// ---------------------------------------------------------------------------------------

/// One attempt to reach something from a namespace.
#[derive(Clone, Copy)]
enum Probe<'a> {
    /// One `ping` (`ping -6` for IPv6), answered within 1 s.
    Ping(&'a Netns, &'a str),
    /// A TCP connection, accepted within 1 s.
    Tcp(&'a Netns, &'a str, u16),
    /// One `ping -I SRC`: from one of the namespace's own addresses.
    PingFrom(&'a Netns, &'a str, &'a str),
}

impl Probe<'_> {
    fn once(self) -> bool {
        match self {
            Probe::Ping(ns, dst) => {
                let mut args = vec!["ping", "-c", "1", "-W", "1", "-q"];
                if dst.contains(':') {
                    args.insert(1, "-6");
                }
                args.push(dst);
                exec(ns, &args).status.success()
            }
            Probe::PingFrom(ns, src, dst) => {
                let mut args = vec!["ping", "-c", "1", "-W", "1", "-q", "-I", src];
                if dst.contains(':') {
                    args.insert(1, "-6");
                }
                args.push(dst);
                exec(ns, &args).status.success()
            }
            Probe::Tcp(ns, dst, port) => {
                let to = SocketAddr::new(ip_addr(dst), port);
                in_netns(ns, || {
                    TcpStream::connect_timeout(&to, Duration::from_secs(1)).is_ok()
                })
            }
        }
    }

    fn describe(self) -> String {
        match self {
            Probe::Ping(ns, dst) => format!("ping {dst} from {}", ns.name),
            Probe::Tcp(ns, dst, port) => format!("TCP {dst} port {port} from {}", ns.name),
            Probe::PingFrom(ns, src, dst) => format!("ping {dst} from {src} in {}", ns.name),
        }
    }
}

/// Runs every probe at once (up to `tries` attempts each); which succeeded.
fn probe_all(probes: &[Probe<'_>], tries: usize) -> Vec<bool> {
    std::thread::scope(|s| {
        let handles: Vec<_> = probes
            .iter()
            .map(|p| s.spawn(move || (0..tries).any(|_| p.once())))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

/// Every probe succeeds (within five attempts: the first packets may wait for a handshake
/// or neighbour discovery).
#[track_caller]
fn assert_pass(what: &str, probes: &[Probe<'_>]) {
    let got = probe_all(probes, 5);
    let failed: Vec<String> = probes
        .iter()
        .zip(got)
        .filter(|(_, ok)| !ok)
        .map(|(p, _)| p.describe())
        .collect();
    assert!(failed.is_empty(), "{what}: these must pass: {failed:?}");
}

/// No probe succeeds (one attempt each, all at once).
#[track_caller]
fn assert_blocked(what: &str, probes: &[Probe<'_>]) {
    let got = probe_all(probes, 1);
    let passed: Vec<String> = probes
        .iter()
        .zip(got)
        .filter(|(_, ok)| *ok)
        .map(|(p, _)| p.describe())
        .collect();
    assert!(
        passed.is_empty(),
        "{what}: these must be blocked: {passed:?}"
    );
}

/// TCP listeners on `[::]` (both families) in a namespace, recording the source address
/// of every connection they accept.
struct Listener {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<IpAddr>>>,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    fn start(ns: &Netns, ports: &[u16]) -> Listener {
        let sockets: Vec<TcpListener> = in_netns(ns, || {
            ports
                .iter()
                .map(|p| TcpListener::bind(SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), *p)))
                .collect::<std::io::Result<_>>()
                .unwrap()
        });
        for s in &sockets {
            s.set_nonblocking(true).unwrap();
        }
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, seen) = (stop.clone(), seen.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    for s in &sockets {
                        match s.accept() {
                            // An IPv4 client shows as ::ffff:a.b.c.d on a dual-stack socket.
                            Ok((_, from)) => seen.lock().unwrap().push(from.ip().to_canonical()),
                            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                            // A connection reset before it was accepted: not one to record.
                            Err(e) => eprintln!("accept: {e}"),
                        }
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        };
        Listener {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    /// The sources accepted since the last call.
    fn take(&self) -> Vec<IpAddr> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What a UDP transfer delivered: payload bytes in all, payload bytes that arrived at
/// least `settle` after the first datagram, and the seconds from then to the last one.
struct Blast {
    received: u64,
    late: u64,
    late_secs: f64,
}

/// Sends 1000-byte UDP datagrams from `from` to `dst`:9999 at `rate` payload bytes per
/// second for `secs`, while `to` (which holds `dst`) counts what arrives.
fn udp_blast(from: &Netns, to: &Netns, dst: &str, rate: u64, secs: f64, settle: Duration) -> Blast {
    let dst = SocketAddr::new(ip_addr(dst), 9999);
    let rx = in_netns(to, || UdpSocket::bind(dst).unwrap());
    rx.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let any: SocketAddr = if dst.is_ipv6() {
        "[::]:0".parse().unwrap()
    } else {
        "0.0.0.0:0".parse().unwrap()
    };
    let tx = in_netns(from, || UdpSocket::bind(any).unwrap());
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let receiver = s.spawn(|| {
            let mut buf = [0u8; 2048];
            let (mut received, mut late) = (0u64, 0u64);
            let (mut first, mut last) = (None::<Instant>, None::<Instant>);
            loop {
                match rx.recv(&mut buf) {
                    Ok(n) => {
                        let now = Instant::now();
                        let start = *first.get_or_insert(now);
                        received += n as u64;
                        if now.duration_since(start) >= settle {
                            late += n as u64;
                        }
                        last = Some(now);
                    }
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        if done.load(Ordering::Relaxed) {
                            break;
                        }
                    }
                    Err(e) => panic!("recv: {e}"),
                }
            }
            let late_secs = match (first, last) {
                (Some(f), Some(l)) => l.duration_since(f).as_secs_f64() - settle.as_secs_f64(),
                _ => 0.0,
            };
            Blast {
                received,
                late,
                late_secs,
            }
        });
        let data = [0x55u8; 1000];
        let start = Instant::now();
        let mut sent = 0u64;
        loop {
            let elapsed = start.elapsed().as_secs_f64();
            if elapsed >= secs {
                break;
            }
            while float(sent) < float(rate) * elapsed {
                // Buffers full or a route missing: the datagram is lost, as a test of
                // what arrives wants.
                let _ = tx.send_to(&data, dst);
                sent += data.len() as u64;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        // What is still in flight arrives (or not) before the count ends.
        std::thread::sleep(Duration::from_millis(500));
        done.store(true, Ordering::Relaxed);
        receiver
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}

/// Sets every `packets` and `bytes` field to 0: counters that traffic may move.
fn without_counters(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if (k == "packets" || k == "bytes") && x.is_number() {
                    *x = Value::from(0);
                } else {
                    without_counters(x);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(without_counters),
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------
// The world of one test
// ---------------------------------------------------------------------------------------

/// A WireGuard client: peer `peer` of the server, in a namespace of its own, on a
/// wireguard-go device routing everything through the tunnel.
struct Client {
    peer: String,
    ns: Netns,
    v4: String,
    v6: String,
}

/// The namespaces, the store and the devices of one test. Fields drop in order: the
/// clients' daemons are stopped, then every namespace goes (with the daemon wgm
/// started, whose UAPI socket the server namespace's guard removes).
struct World {
    env: Env,
    daemons: Vec<Daemon>,
    clients: Vec<Client>,
    server: Netns,
    upstream: Netns,
    /// The server's tunnel addresses.
    tun4: String,
    tun6: String,
    /// `nft -j list table inet host` in the server namespace, without counter values,
    /// once the test made that table: every apply must leave it so.
    host_table: Option<Value>,
}

impl World {
    /// The namespaces, the server `office` with one peer per name in `peers` (each with
    /// its client), applied through the CLI with the default policy; each client's
    /// tunnel answers.
    fn new(tag: &str, peers: &[&str]) -> World {
        let peers: Vec<(&str, &[&str])> = peers.iter().map(|p| (*p, &[][..])).collect();
        World::create(tag, &[], &peers)
    }

    /// As [`World::new`], with `server_args` added to `server create` and each peer's
    /// own arguments to its `peer add`.
    fn create(tag: &str, server_args: &[&str], peers: &[(&str, &[&str])]) -> World {
        let server = namespace(&format!("fw{tag}-srv"));
        let upstream = namespace(&format!("fw{tag}-up"));
        let env = Env::new();
        let dev = iface(&format!("{tag}s"));
        env.ok(&[
            "server",
            "create",
            SERVER,
            "--listen-port",
            &PORT.to_string(),
            "--interface",
            &dev,
            "--ipv4",
            "10.8.0.0/24",
            "--ipv6",
            "fd12:3456:789a:1::/64",
            "--endpoint",
            "192.168.101.1:51820",
        ]
        .into_iter()
        .chain(server_args.iter().copied())
        .collect::<Vec<_>>());
        let shown = env.json(&["server", "show", SERVER]);
        let mut world = World {
            env,
            daemons: Vec::new(),
            clients: Vec::new(),
            server,
            upstream,
            tun4: shown["address_v4"].as_str().unwrap().to_owned(),
            tun6: shown["address_v6"].as_str().unwrap().to_owned(),
            host_table: None,
        };
        world.server.ifaces.push(dev);
        ip(
            &world.server,
            &[
                "link",
                "add",
                "up0",
                "type",
                "veth",
                "peer",
                "name",
                "u0",
                "netns",
                &world.upstream.name,
            ],
        );
        for (ns, link, addrs) in [
            (&world.server, "up0", &["10.99.0.1/24", "fd99::1/64"][..]),
            (
                &world.upstream,
                "u0",
                &["10.99.0.2/24", "10.99.0.3/24", "fd99::2/64", "fd99::3/64"][..],
            ),
        ] {
            for a in addrs {
                ip(ns, &["address", "add", a, "dev", link]);
            }
            ip(ns, &["link", "set", link, "up"]);
        }
        ip(
            &world.upstream,
            &["route", "add", "10.8.0.0/24", "via", SRV_UP4],
        );
        ip(
            &world.upstream,
            &[
                "-6",
                "route",
                "add",
                "fd12:3456:789a:1::/64",
                "via",
                SRV_UP6,
            ],
        );
        sysctl(&world.server, "net.ipv4.ip_forward", "1");
        sysctl(&world.server, "net.ipv6.conf.all.forwarding", "1");

        for (peer, args) in peers {
            let mut all = vec!["peer", "add", SERVER, peer];
            all.extend_from_slice(args);
            world.env.ok(&all);
        }
        // The server first: a client's first handshake lost to a missing server would be
        // retried only after WireGuard's rekey timeout (5 s).
        world.apply();
        for (i, (peer, _)) in peers.iter().enumerate() {
            world.add_client(tag, i + 1, peer);
        }
        {
            let probes: Vec<Probe<'_>> = world
                .clients
                .iter()
                .flat_map(|c| {
                    [
                        Probe::Ping(&c.ns, &world.tun4),
                        Probe::Ping(&c.ns, &world.tun6),
                    ]
                })
                .collect();
            assert_pass("every tunnel answers", &probes);
        }
        world
    }

    /// Client `n` for `peer`: a veth pair to the server (`192.168.10N.0/24`), wireguard-go
    /// set up from `wgm peer config` (its key, preshared key and addresses; the endpoint
    /// is the server's end of this pair), and every route through the tunnel.
    fn add_client(&mut self, tag: &str, n: usize, peer: &str) {
        let ns = namespace(&format!("fw{tag}-c{n}"));
        let side = format!("c{n}");
        ip(
            &self.server,
            &[
                "link", "add", &side, "type", "veth", "peer", "name", "s0", "netns", &ns.name,
            ],
        );
        let (srv_addr, cl_addr) = (format!("192.168.10{n}.1"), format!("192.168.10{n}.2"));
        ip(
            &self.server,
            &["address", "add", &format!("{srv_addr}/24"), "dev", &side],
        );
        ip(&self.server, &["link", "set", &side, "up"]);
        ip(
            &ns,
            &["address", "add", &format!("{cl_addr}/24"), "dev", "s0"],
        );
        ip(&ns, &["link", "set", "s0", "up"]);

        let config = self.env.ok(&["peer", "config", SERVER, peer]);
        let (mut private, mut psk, mut server_key, mut addresses) = (None, None, None, Vec::new());
        for line in config.lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            // Keys end in '=': only the first one separates.
            let v = v.trim();
            match k.trim() {
                "PrivateKey" => private = Some(v.to_owned()),
                "PresharedKey" => psk = Some(v.to_owned()),
                "PublicKey" => server_key = Some(v.to_owned()),
                "Address" => addresses.extend(v.split(',').map(|a| a.trim().to_owned())),
                _ => {}
            }
        }
        let key_file = self.env.path(&format!("{peer}.key"));
        std::fs::write(&key_file, private.expect("PrivateKey in the config")).unwrap();
        let dev = iface(&format!("{tag}{n}"));
        let mut ns = ns;
        ns.ifaces.push(dev.clone());
        let daemon = Command::new("ip")
            .args(["netns", "exec", &ns.name, "wireguard-go", "-f", &dev])
            .env("WG_PROCESS_FOREGROUND", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.daemons.push(Daemon(daemon));
        let sock = format!("/var/run/wireguard/{dev}.sock");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(&sock).is_err() {
            assert!(
                Instant::now() < deadline,
                "wireguard-go of {peer} did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let key_path = key_file.to_str().unwrap().to_owned();
        let server_key = server_key.expect("PublicKey in the config");
        let endpoint = format!("{srv_addr}:{PORT}");
        let mut wg = vec![
            "wg",
            "set",
            &dev,
            "private-key",
            &key_path,
            "peer",
            &server_key,
            "endpoint",
            &endpoint,
            "allowed-ips",
            "0.0.0.0/0,::/0",
        ];
        let psk_path = self.env.path(&format!("{peer}.psk"));
        let psk_path = psk_path.to_str().unwrap().to_owned();
        if let Some(psk) = psk {
            std::fs::write(&psk_path, psk).unwrap();
            wg.extend(["preshared-key", &psk_path]);
        }
        exec_ok(&ns, &wg);
        let (mut v4, mut v6) = (String::new(), String::new());
        for a in &addresses {
            ip(&ns, &["address", "add", a, "dev", &dev]);
            let host = a.split('/').next().unwrap().to_owned();
            if host.contains(':') {
                v6 = host;
            } else {
                v4 = host;
            }
        }
        assert!(!v4.is_empty() && !v6.is_empty(), "{config}");
        ip(&ns, &["link", "set", &dev, "mtu", "1420", "up"]);
        ip(&ns, &["route", "add", "default", "dev", &dev]);
        ip(&ns, &["-6", "route", "add", "default", "dev", &dev]);
        self.clients.push(Client {
            peer: peer.to_owned(),
            ns,
            v4,
            v6,
        });
    }

    fn client(&self, peer: &str) -> &Client {
        self.clients.iter().find(|c| c.peer == peer).unwrap()
    }

    /// `wgm ARGS` inside the server namespace.
    fn wgm(&self, args: &[&str]) -> Run {
        let c = self.env.cmd(args);
        let mut outer = Command::new("ip");
        outer
            .args(["netns", "exec", &self.server.name])
            .arg(c.get_program())
            .args(c.get_args());
        for (k, v) in c.get_envs() {
            match v {
                Some(v) => outer.env(k, v),
                None => outer.env_remove(k),
            };
        }
        outer.env("WGM_HOST", "fw-test").stdin(Stdio::null());
        Run::from(&outer.output().unwrap())
    }

    /// `wgm --json ARGS` inside the server namespace: it succeeds; its JSON.
    fn wgm_json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let r = self.wgm(&all);
        assert_eq!(
            r.code, 0,
            "wgm {all:?} ({}):\nstdout: {}\nstderr: {}",
            r.code, r.stdout, r.stderr
        );
        serde_json::from_str(&r.stdout).unwrap()
    }

    /// `wgm apply office --backend userspace --firewall nft`: it converges, device and
    /// firewall, and the host's own table (once there is one) is as it was. The report.
    fn apply(&self) -> Value {
        let report = self.wgm_json(&[
            "apply",
            SERVER,
            "--backend",
            "userspace",
            "--firewall",
            "nft",
        ]);
        assert_eq!(report["converged"], true, "{report:#}");
        assert_eq!(report["firewall"]["converged"], true, "{report:#}");
        assert!(report["firewall"]["error"].is_null(), "{report:#}");
        if let Some(before) = &self.host_table {
            assert_eq!(
                &self.host_table_now(),
                before,
                "the host's own table changed"
            );
        }
        report
    }

    /// Each peer's `firewall` object in `wgm --json status office --firewall nft`.
    fn firewall_status(&self) -> std::collections::BTreeMap<String, Value> {
        let s = self.wgm_json(&[
            "status",
            SERVER,
            "--backend",
            "userspace",
            "--firewall",
            "nft",
        ]);
        s["peers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap().to_owned(),
                    p["firewall"].clone(),
                )
            })
            .collect()
    }

    /// Makes the host's own table `inet host` in the server namespace: a named counter,
    /// a forward chain after wgm's that counts what wgm let through, an input rule.
    fn make_host_table(&mut self) {
        let script = "table inet host {\n\
            \tcounter seen { }\n\
            \tchain host_forward { type filter hook forward priority 10; policy accept; counter name seen; }\n\
            \tchain host_input { type filter hook input priority 0; policy accept; tcp dport 22 counter accept; }\n\
            }\n";
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.server.name, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), script.as_bytes()).unwrap();
        assert!(child.wait().unwrap().success(), "nft -f: the host table");
        self.host_table = Some(self.host_table_now());
    }

    fn host_table_now(&self) -> Value {
        let mut v: Value = serde_json::from_str(&exec_ok(
            &self.server,
            &["nft", "-j", "list", "table", "inet", "host"],
        ))
        .unwrap();
        without_counters(&mut v);
        v
    }

    /// The packets the host table's named counter `seen` has counted.
    fn host_counter(&self) -> u64 {
        let v: Value = serde_json::from_str(&exec_ok(
            &self.server,
            &["nft", "-j", "list", "counter", "inet", "host", "seen"],
        ))
        .unwrap();
        v["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|o| o["counter"]["packets"].as_u64())
            .unwrap()
    }
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

/// Allow lists, the default verdict and peer-to-peer, both families, through the tunnel:
/// alice may reach `10.99.0.2` and `fd99::2` by ping and on TCP port 8080 and nothing
/// else; bob, without a list of his own, gets the server's default (`deny`); the two
/// cannot reach each other until `--peer-to-peer allow`, and then alice (whose list
/// decides everything she starts) reaches bob only once her list names the tunnel's
/// networks; what they send each other is counted on both sides. With `--forwarding off` only peer-to-peer traffic passes. The host table in
/// the same namespace comes through every apply unchanged (while its own chain keeps
/// counting), the last one, which removes the inactive server's firewall, included.
#[test]
fn firewall_live_allow_lists_default_verdict_and_peer_to_peer() {
    let Some(_netns) = require(Suite::Netns, TOOLS) else {
        return;
    };
    let mut w = World::new("acl", &["alice", "bob"]);
    w.make_host_table();
    let _listener = Listener::start(&w.upstream, &[8080, 9090]);
    let (alice, bob) = (w.client("alice"), w.client("bob"));
    // With the default policy (allow, no lists) everything passes, except peer-to-peer.
    assert_pass(
        "default policy",
        &[
            Probe::Ping(&alice.ns, OTHER4),
            Probe::Ping(&alice.ns, OTHER6),
            Probe::Tcp(&bob.ns, UP4, 9090),
            Probe::Tcp(&bob.ns, UP6, 9090),
        ],
    );
    assert_blocked(
        "peer-to-peer is denied by default",
        &[
            Probe::Ping(&alice.ns, &bob.v4),
            Probe::Ping(&alice.ns, &bob.v6),
        ],
    );

    w.env.ok(&["policy", "set", SERVER, "--default", "deny"]);
    w.env.ok(&[
        "peer",
        "set",
        SERVER,
        "alice",
        "--allow",
        "10.99.0.2/32:icmp,10.99.0.2/32:tcp:8080,[fd99::2/128]:icmp,[fd99::2/128]:tcp:8000-8080",
    ]);
    let report = w.apply();
    let items = report["firewall"]["plan"]["items"].to_string();
    assert!(
        items.contains("static part") && items.contains("alice") && !items.contains("bob"),
        "{items}"
    );
    let (alice, bob) = (w.client("alice"), w.client("bob"));
    let seen_before = w.host_counter();
    assert_pass(
        "alice's allow list",
        &[
            Probe::Ping(&alice.ns, UP4),
            Probe::Ping(&alice.ns, UP6),
            Probe::Tcp(&alice.ns, UP4, 8080),
            Probe::Tcp(&alice.ns, UP6, 8080),
        ],
    );
    assert!(
        w.host_counter() > seen_before,
        "the host's chain sees what wgm lets through"
    );
    assert_blocked(
        "outside alice's list, bob under the default deny, peer to peer",
        &[
            Probe::Tcp(&alice.ns, UP4, 9090),
            Probe::Tcp(&alice.ns, UP6, 9090),
            Probe::Ping(&alice.ns, OTHER4),
            Probe::Ping(&alice.ns, OTHER6),
            Probe::Tcp(&alice.ns, OTHER4, 8080),
            Probe::Tcp(&alice.ns, OTHER6, 8080),
            Probe::Ping(&bob.ns, UP4),
            Probe::Ping(&bob.ns, UP6),
            Probe::Tcp(&bob.ns, UP6, 8080),
            Probe::Ping(&alice.ns, &bob.v4),
            Probe::Ping(&alice.ns, &bob.v6),
            Probe::Ping(&bob.ns, &alice.v4),
            Probe::Ping(&bob.ns, &alice.v6),
        ],
    );
    // The drops are counted per peer.
    let fw = w.firewall_status();
    assert!(
        fw["alice"]["dropped_packets"].as_u64().unwrap() >= 6,
        "{fw:?}"
    );
    assert!(
        fw["bob"]["dropped_packets"].as_u64().unwrap() >= 3,
        "{fw:?}"
    );
    assert!(fw["alice"]["up_bytes"].as_u64().unwrap() > 0, "{fw:?}");
    assert!(fw["alice"]["down_bytes"].as_u64().unwrap() > 0, "{fw:?}");

    w.env
        .ok(&["policy", "set", SERVER, "--peer-to-peer", "allow"]);
    w.apply();
    let (alice, bob) = (w.client("alice"), w.client("bob"));
    // Bob, without a list, reaches alice (her replies are part of his connection); alice's
    // list does not name bob, so her own list still keeps her from him.
    let before = w.firewall_status();
    assert_pass(
        "peer to peer allowed",
        &[
            Probe::Ping(&bob.ns, &alice.v4),
            Probe::Ping(&bob.ns, &alice.v6),
        ],
    );
    // Traffic between peers counts on both sides: the sender's upload and the receiver's
    // download (so the receiver's quota and download rate hold it too), replies included.
    let after = w.firewall_status();
    let grew = |peer: &str, field: &str| {
        after[peer][field].as_u64().unwrap() > before[peer][field].as_u64().unwrap()
    };
    for (peer, field) in [
        ("bob", "up_bytes"),
        ("alice", "down_bytes"),
        ("alice", "up_bytes"),
        ("bob", "down_bytes"),
    ] {
        assert!(grew(peer, field), "{peer} {field}: {before:?} → {after:?}");
    }
    assert_blocked(
        "alice's list still decides where she goes, other peers included",
        &[
            Probe::Ping(&alice.ns, &bob.v4),
            Probe::Ping(&alice.ns, &bob.v6),
            Probe::Ping(&bob.ns, UP4),
            Probe::Ping(&bob.ns, UP6),
            Probe::Ping(&alice.ns, OTHER6),
        ],
    );
    w.env.ok(&[
        "peer",
        "set",
        SERVER,
        "alice",
        "--allow",
        "10.99.0.2/32:icmp,10.99.0.2/32:tcp:8080,[fd99::2/128]:icmp,[fd99::2/128]:tcp:8000-8080,\
         10.8.0.0/24:icmp,[fd12:3456:789a:1::/64]:icmp",
    ]);
    w.apply();
    let (alice, bob) = (w.client("alice"), w.client("bob"));
    assert_pass(
        "alice's list names the tunnel's networks",
        &[
            Probe::Ping(&alice.ns, &bob.v4),
            Probe::Ping(&alice.ns, &bob.v6),
            Probe::Ping(&alice.ns, UP6),
        ],
    );

    // Forwarding off: nothing leaves the tunnel, peer-to-peer traffic still passes.
    w.env.ok(&["policy", "set", SERVER, "--forwarding", "off"]);
    w.apply();
    let (alice, bob) = (w.client("alice"), w.client("bob"));
    assert_blocked(
        "forwarding off",
        &[
            Probe::Ping(&alice.ns, UP4),
            Probe::Tcp(&alice.ns, UP6, 8080),
            Probe::Ping(&bob.ns, UP4),
        ],
    );
    assert_pass(
        "peer to peer without forwarding",
        &[
            Probe::Ping(&alice.ns, &bob.v6),
            Probe::Ping(&bob.ns, &alice.v4),
        ],
    );
    w.env.ok(&["policy", "set", SERVER, "--forwarding", "on"]);

    // The default back to allow: bob passes; alice's list still holds.
    w.env.ok(&["policy", "set", SERVER, "--default", "allow"]);
    w.apply();
    let (alice, bob) = (w.client("alice"), w.client("bob"));
    assert_pass(
        "default allow",
        &[
            Probe::Ping(&bob.ns, OTHER4),
            Probe::Ping(&bob.ns, OTHER6),
            Probe::Tcp(&bob.ns, UP4, 9090),
        ],
    );
    assert_blocked(
        "alice's list",
        &[
            Probe::Ping(&alice.ns, OTHER4),
            Probe::Tcp(&alice.ns, UP6, 9090),
        ],
    );
    // An apply with nothing to change changes nothing, the firewall included.
    let report = w.apply();
    assert_eq!(
        report["firewall"]["plan"]["items"],
        Value::Array(Vec::new())
    );

    // An inactive server: the apply removes its device and its firewall, wgm's table
    // with it (it held nothing else); the host's table stays (`World::apply` compares).
    w.env.ok(&["server", "set", SERVER, "--active", "no"]);
    w.apply();
    let gone = exec(&w.server, &["nft", "list", "table", "inet", "wgm"]);
    assert!(!gone.status.success(), "the table inet wgm is left");
}

/// Masquerading per family: the upstream host sees the server's address on its link as
/// the source of a peer's TCP connection where the family is masqueraded, and the peer's
/// own tunnel address where it is not.
#[test]
fn firewall_live_masquerade_per_family() {
    let Some(_netns) = require(Suite::Netns, TOOLS) else {
        return;
    };
    let w = World::new("nat", &["alice"]);
    let listener = Listener::start(&w.upstream, &[8080]);
    let alice = w.client("alice");
    let (a4, a6) = (ip_addr(&alice.v4), ip_addr(&alice.v6));
    let (s4, s6) = (ip_addr(SRV_UP4), ip_addr(SRV_UP6));
    let connect_both = || {
        // Neighbour discovery first, so that nothing below waits for it.
        assert_pass(
            "pings",
            &[Probe::Ping(&alice.ns, UP4), Probe::Ping(&alice.ns, UP6)],
        );
        assert_pass("connections", &[Probe::Tcp(&alice.ns, UP4, 8080)]);
        assert_pass("connections", &[Probe::Tcp(&alice.ns, UP6, 8080)]);
        // The accepting thread polls every 5 ms.
        std::thread::sleep(Duration::from_millis(100));
        listener.take()
    };
    assert_eq!(connect_both(), vec![a4, a6], "no masquerading");

    for (m4, m6, want) in [
        ("up0", "up0", vec![s4, s6]),
        ("none", "up0", vec![a4, s6]),
        ("up0", "none", vec![s4, a6]),
        ("none", "none", vec![a4, a6]),
    ] {
        w.env.ok(&[
            "policy",
            "set",
            SERVER,
            "--masquerade4",
            m4,
            "--masquerade6",
            m6,
        ]);
        w.apply();
        assert_eq!(connect_both(), want, "masquerade4 {m4}, masquerade6 {m6}");
    }
}

/// A quota of 200 KiB through the tunnel: about that much arrives, the rest is dropped,
/// and `wgm status --firewall nft --json` reports the quota used up and the drops.
/// Adding a peer (`peer add` + `apply`) keeps every other peer's counters and quota use
/// exactly; raising the quota (`peer set --quota` + `apply`) lets traffic through again
/// and leaves the other peer's counters as they were. The host table stays untouched.
#[test]
fn firewall_live_quota_and_counters_across_applies() {
    const QUOTA: u64 = 200 * 1024;
    let Some(_netns) = require(Suite::Netns, TOOLS) else {
        return;
    };
    let mut w = World::new("quota", &["alice", "bob"]);
    w.make_host_table();
    w.env
        .ok(&["peer", "set", SERVER, "alice", "--quota", "200KiB/30d"]);
    w.env
        .ok(&["peer", "set", SERVER, "bob", "--quota", "10MiB/30d"]);
    w.apply();
    let (alice, bob) = (w.client("alice"), w.client("bob"));
    assert_pass(
        "before the quotas are used",
        &[Probe::Ping(&alice.ns, UP4), Probe::Ping(&bob.ns, UP6)],
    );
    // Bob uses some of his.
    let b = udp_blast(&bob.ns, &w.upstream, UP6, 1_000_000, 0.1, Duration::ZERO);
    assert!(b.received > 50_000, "bob's transfer: {}", b.received);

    // 500 KB offered by alice (about 514 KB of IP packets).
    let a = udp_blast(&alice.ns, &w.upstream, UP4, 1_000_000, 0.5, Duration::ZERO);
    eprintln!("quota {QUOTA}: {} payload bytes arrived", a.received);
    // The quota counts IP bytes both ways (1028 per datagram, and the pings above).
    assert!(
        (QUOTA * 9 / 10..=QUOTA).contains(&a.received),
        "alice's transfer under a quota of {QUOTA}: {} arrived",
        a.received
    );
    assert_blocked(
        "alice's quota is used up",
        &[Probe::Ping(&alice.ns, UP4), Probe::Ping(&alice.ns, UP6)],
    );
    assert_pass("bob still has quota", &[Probe::Ping(&bob.ns, UP4)]);
    let before = w.firewall_status();
    let fa = &before["alice"];
    eprintln!("alice's firewall status: {fa}");
    assert_eq!(fa["quota_bytes"], QUOTA, "{fa}");
    assert!(fa["quota_used"].as_u64().unwrap() >= a.received, "{fa}");
    assert_eq!(fa["quota_remaining"], 0, "{fa}");
    assert!(fa["dropped_packets"].as_u64().unwrap() > 250, "{fa}");
    assert!(fa["dropped_bytes"].as_u64().unwrap() > 250_000, "{fa}");
    let fb = &before["bob"];
    assert_eq!(fb["quota_bytes"], 10 * 1024 * 1024, "{fb}");
    assert!(fb["quota_used"].as_u64().unwrap() >= b.received, "{fb}");
    assert_eq!(fb["dropped_packets"], 0, "{fb}");
    // The human status shows the quota column.
    let text = w.wgm(&[
        "status",
        SERVER,
        "--backend",
        "userspace",
        "--firewall",
        "nft",
    ]);
    assert!(text.stdout.contains("QUOTA USED"), "{}", text.stdout);

    // A new peer: only it is written; everyone else's counters and quota use stay.
    w.env.ok(&["peer", "add", SERVER, "carol"]);
    let report = w.apply();
    let items = report["firewall"]["plan"]["items"].as_array().unwrap();
    assert!(
        items.len() == 1 && items[0].as_str().unwrap().starts_with("peer carol:"),
        "{items:?}"
    );
    let after = w.firewall_status();
    assert_eq!(
        after["alice"], before["alice"],
        "adding carol touched alice"
    );
    assert_eq!(after["bob"], before["bob"], "adding carol touched bob");
    assert!(after["carol"].is_object(), "{after:?}");

    // Alice's quota raised: traffic flows again; bob's counters stay.
    w.env
        .ok(&["peer", "set", SERVER, "alice", "--quota", "100MiB/30d"]);
    let report = w.apply();
    let items = report["firewall"]["plan"]["items"].to_string();
    assert!(
        items.contains("alice") && !items.contains("bob") && !items.contains("static part"),
        "{items}"
    );
    let raised = w.firewall_status();
    assert_eq!(
        raised["bob"], before["bob"],
        "raising alice's quota touched bob"
    );
    assert_eq!(raised["alice"]["quota_bytes"], 100 * 1024 * 1024);
    let (alice, bob) = (w.client("alice"), w.client("bob"));
    assert_pass(
        "alice's raised quota",
        &[Probe::Ping(&alice.ns, UP4), Probe::Ping(&alice.ns, UP6)],
    );
    let a = udp_blast(&alice.ns, &w.upstream, UP6, 1_000_000, 0.3, Duration::ZERO);
    assert!(
        a.received >= 270_000,
        "after raising: {} arrived",
        a.received
    );
    let now = w.firewall_status();
    assert!(
        now["alice"]["quota_used"].as_u64().unwrap() >= a.received,
        "{now:?}"
    );
    assert_eq!(now["bob"], before["bob"], "alice's traffic touched bob");
    assert_pass("bob", &[Probe::Ping(&bob.ns, UP6)]);
}

/// Rate limits through the tunnel: with `--rate-up 8mbit --rate-down 8mbit` (1 000 000
/// bytes/s of IP packets), UDP offered at three times that arrives at the rate ± 20 %,
/// up in both families and down.
#[test]
fn firewall_live_rate_limits() {
    const RATE: f64 = 1_000_000.0;
    let Some(_netns) = require(Suite::Netns, TOOLS) else {
        return;
    };
    let w = World::new("rate", &["alice"]);
    w.env.ok(&[
        "peer",
        "set",
        SERVER,
        "alice",
        "--rate-up",
        "8mbit",
        "--rate-down",
        "8mbit",
    ]);
    w.apply();
    let alice = w.client("alice");
    assert_pass(
        "neighbours",
        &[Probe::Ping(&alice.ns, UP4), Probe::Ping(&alice.ns, UP6)],
    );
    for (what, from, to, dst, wire) in [
        ("up, IPv4", &alice.ns, &w.upstream, UP4, 1028.0),
        ("up, IPv6", &alice.ns, &w.upstream, UP6, 1048.0),
        (
            "down, IPv4",
            &w.upstream,
            &alice.ns,
            alice.v4.as_str(),
            1028.0,
        ),
        (
            "down, IPv6",
            &w.upstream,
            &alice.ns,
            alice.v6.as_str(),
            1048.0,
        ),
    ] {
        let b = udp_blast(from, to, dst, 3_000_000, 2.5, Duration::from_secs(1));
        // The limit counts IP packets: 1028 (IPv4) or 1048 (IPv6) bytes per datagram.
        let rate = float(b.late) / b.late_secs * wire / 1000.0;
        eprintln!(
            "{what}: {rate:.0} bytes/s of IP packets against {RATE} ({} payload bytes in all)",
            b.received
        );
        assert!(
            (RATE * 0.8..=RATE * 1.2).contains(&rate),
            "{what}: {rate:.0} bytes/s"
        );
    }
    let fw = w.firewall_status();
    assert!(
        fw["alice"]["dropped_packets"].as_u64().unwrap() > 4000,
        "{fw:?}"
    );
}

/// A peer's routed networks are the peer: alice gets a delegated IPv6 prefix
/// (`peer add --prefix auto`, from the server's `--delegation`) and a network behind her
/// (`--allowed-ips 10.60.0.0/24`); her client sends from `10.60.0.7` and from an address
/// in her prefix (on its loopback, routed into the tunnel like everything else). With an
/// allow list naming one upstream host, under the server's default `allow`, those sources
/// reach that host and nothing else, in both families, as her tunnel addresses do; the
/// drops are counted as hers. Before routed networks counted, the forbidden host
/// answered them. A second apply changes nothing.
#[test]
fn firewall_live_routed_networks_obey_the_peers_allow_list() {
    const SITE4: &str = "10.60.0.7";
    let Some(_netns) = require(Suite::Netns, TOOLS) else {
        return;
    };
    let w = World::create(
        "rtd",
        &[
            "--delegation",
            "fd12:3456:789b::/48",
            "--delegation-len",
            "64",
        ],
        &[(
            "alice",
            &["--prefix", "auto", "--allowed-ips", "10.60.0.0/24"][..],
        )],
    );
    let shown = w.env.json(&["peer", "show", SERVER, "alice"]);
    let prefix = shown["delegated_prefix"].as_str().unwrap().to_owned();
    assert!(
        prefix.starts_with("fd12:3456:789b:") && prefix.ends_with("::/64"),
        "{shown}"
    );
    assert_eq!(shown["extra_allowed_ips"][0], "10.60.0.0/24", "{shown}");
    let site6 = format!("{}7", prefix.trim_end_matches("/64"));
    let alice = w.client("alice");
    ip(
        &alice.ns,
        &["address", "add", &format!("{SITE4}/32"), "dev", "lo"],
    );
    ip(
        &alice.ns,
        &[
            "address",
            "add",
            &format!("{site6}/128"),
            "dev",
            "lo",
            "nodad",
        ],
    );
    // The upstream routes the routed networks back through the server, which routes
    // them into the tunnel (wgm set those routes on apply).
    ip(
        &w.upstream,
        &["route", "add", "10.60.0.0/24", "via", SRV_UP4],
    );
    ip(
        &w.upstream,
        &["-6", "route", "add", "fd12:3456:789b::/48", "via", SRV_UP6],
    );
    assert_pass(
        "the routed networks before any list",
        &[
            Probe::PingFrom(&alice.ns, SITE4, UP4),
            Probe::PingFrom(&alice.ns, &site6, UP6),
            Probe::PingFrom(&alice.ns, SITE4, OTHER4),
            Probe::PingFrom(&alice.ns, &site6, OTHER6),
        ],
    );

    w.env.ok(&[
        "peer",
        "set",
        SERVER,
        "alice",
        "--allow",
        "10.99.0.2/32:icmp,[fd99::2/128]:icmp",
    ]);
    let report = w.apply();
    let items = report["firewall"]["plan"]["items"].to_string();
    assert!(items.contains("alice"), "{items}");
    let alice = w.client("alice");
    let dropped_before = w.firewall_status()["alice"]["dropped_packets"]
        .as_u64()
        .unwrap();
    assert_pass(
        "alice's list, from her routed networks and her tunnel addresses",
        &[
            Probe::PingFrom(&alice.ns, SITE4, UP4),
            Probe::PingFrom(&alice.ns, &site6, UP6),
            Probe::Ping(&alice.ns, UP4),
            Probe::Ping(&alice.ns, UP6),
        ],
    );
    assert_blocked(
        "outside alice's list, from her routed networks too",
        &[
            Probe::PingFrom(&alice.ns, SITE4, OTHER4),
            Probe::PingFrom(&alice.ns, &site6, OTHER6),
            Probe::Ping(&alice.ns, OTHER4),
            Probe::Ping(&alice.ns, OTHER6),
        ],
    );
    let fw = w.firewall_status();
    assert!(
        fw["alice"]["dropped_packets"].as_u64().unwrap() >= dropped_before + 4,
        "{fw:?}"
    );
    // Converged: a second apply has nothing to do.
    let report = w.apply();
    assert_eq!(
        report["firewall"]["plan"]["items"],
        Value::Array(Vec::new())
    );
}
