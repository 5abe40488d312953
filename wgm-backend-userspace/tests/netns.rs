//! `UserspaceBackend` on real wireguard-go daemons, each test in its own network
//! namespaces. Opt-in: `WGM_TEST_NETNS=1`, as root, with `wireguard-go`, `ip` and `ping`
//! on PATH (with the switch on, anything missing fails the test).
//!
//! - the backend conformance suite, 10 000 peers and a peer with 10 000 allowed IPs
//!   included (F10);
//! - a daemon killed, then recreated and fully resynced; an interface deleted out of
//!   band (F15, F7);
//! - two namespaces joined by veth, a tunnel configured through the backend, `ping -6`
//!   and `ping` across, handshake and transfer counters read back.
//!
//! Every namespace has a unique name (with the pid); a guard kills the processes inside
//! it (only ever ours) and deletes it on every exit path.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use wgm_backend_userspace::{DaemonCommand, UserspaceBackend, UserspaceConfig, DEFAULT_SOCKET_DIR};
use wgm_core::backend::{DeviceDelta, PeerDelta, WireGuardBackend};
use wgm_core::conformance::backend::{self as suite, Params};
use wgm_core::keys::PrivateKey;
use wgm_core::names::InterfaceName;

mod common;
use common::eventually;
use wgm_test_support::{require, Suite};

const TOOLS: &[&str] = &["wireguard-go", "ip", "ping"];

/// Run an argv; its output, or a panic when it fails.
fn run(args: &[&str]) -> Output {
    let out = common::output(args[0], &args[1..]);
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A network namespace that is deleted (after killing what runs inside it) on drop.
struct Netns {
    name: String,
    /// Interfaces whose sockets to remove on cleanup.
    ifaces: Vec<InterfaceName>,
}

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("wgmu-{}-{tag}", std::process::id());
        // A leftover of a crashed earlier run with the same pid.
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run(&["ip", "netns", "add", &name]);
        run(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        Netns {
            name,
            ifaces: Vec::new(),
        }
    }

    /// A unique interface name for this test run (at most 15 bytes).
    fn iface(&mut self, tag: &str) -> InterfaceName {
        let name =
            InterfaceName::new(format!("wgu{}{tag}", std::process::id())).expect("valid name");
        self.ifaces.push(name.clone());
        name
    }

    fn backend(&self) -> UserspaceBackend {
        let log = std::env::temp_dir().join(format!("{}.log", self.name));
        UserspaceBackend::new(UserspaceConfig {
            daemon: DaemonCommand::wireguard_go()
                .in_netns(&self.name)
                .with_log_file(log),
            ..UserspaceConfig::default()
        })
    }

    fn ip(&self, args: &[&str]) -> Output {
        let mut full = vec!["ip", "-n", self.name.as_str()];
        full.extend_from_slice(args);
        run(&full)
    }

    fn exec(&self, args: &[&str]) -> Output {
        let mut full = vec!["ip", "netns", "exec", self.name.as_str()];
        full.extend_from_slice(args);
        Command::new("ip")
            .args(&full[1..])
            .output()
            .expect("run in netns")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Only our daemons run in this namespace: it was created by this test.
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Some(pid) = pid.parse().ok().and_then(rustix::process::Pid::from_raw) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
            }
        }
        for iface in &self.ifaces {
            let _ =
                std::fs::remove_file(Path::new(DEFAULT_SOCKET_DIR).join(format!("{iface}.sock")));
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_on_wireguard_go() {
    let Some(_netns) = require(Suite::Netns, TOOLS) else {
        return;
    };
    let mut ns = Netns::new("conf");
    let name = ns.iface("c");
    let backend = ns.backend();
    suite::run_wireguard(&backend, &name, &Params::default())
        .await
        .expect("conformance");

    // Numbers for the report: one set of 10 000 peers, one full read.
    backend.create_device(&name).await.expect("create");
    let peers: Vec<PeerDelta> = (0..10_000u32)
        .map(|i| PeerDelta {
            allowed_ips: vec![format!("fd00:7::{i:x}/128").parse().expect("net")],
            ..PeerDelta::new(PrivateKey::generate().public_key())
        })
        .collect();
    let delta = DeviceDelta {
        private_key: Some(PrivateKey::generate()),
        peers,
        ..DeviceDelta::default()
    };
    let t = Instant::now();
    backend
        .apply_device(&name, &delta)
        .await
        .expect("apply 10 000");
    let apply = t.elapsed();
    let t = Instant::now();
    let state = backend
        .read_device(&name)
        .await
        .expect("read")
        .expect("exists");
    let read = t.elapsed();
    assert_eq!(state.peers.len(), 10_000);
    let one = DeviceDelta {
        peers: vec![PeerDelta::new(PrivateKey::generate().public_key())],
        ..DeviceDelta::default()
    };
    let t = Instant::now();
    backend.apply_device(&name, &one).await.expect("apply one");
    let add_one = t.elapsed();
    eprintln!("wireguard-go, 10 000 peers: set {apply:?}, read {read:?}, add one more {add_one:?}");
    backend.delete_device(&name).await.expect("delete");

    // F10 asks for 100 000+ allowed IPs on one peer.
    let t = Instant::now();
    suite::many_allowed_ips(&backend, &name, 100_000)
        .await
        .expect("100 000 allowed IPs");
    eprintln!(
        "wireguard-go, one peer with 100 000 allowed IPs: set, read back and delete in {:?}",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_started_elsewhere_is_used_and_deleted_through_its_socket() {
    let Some(_netns) = require(Suite::Netns, TOOLS) else {
        return;
    };
    let mut ns = Netns::new("foreign");
    let name = ns.iface("f");
    // Started the way wg-quick does it: wireguard-go daemonises and the launcher exits.
    let started = ns.exec(&["wireguard-go", name.as_str()]);
    assert!(
        started.status.success(),
        "wireguard-go: {}",
        String::from_utf8_lossy(&started.stderr)
    );
    let backend = ns.backend();
    assert!(
        eventually(Duration::from_secs(10), async || {
            matches!(backend.read_device(&name).await, Ok(Some(_)))
        })
        .await,
        "the daemon's socket did not appear"
    );
    assert!(backend.list_devices().await.expect("list").contains(&name));
    backend
        .create_device(&name)
        .await
        .expect("create is a no-op");
    assert!(
        backend.child_pid(&name).is_none(),
        "no second daemon was started"
    );
    let pid = backend
        .daemon_pid(&name)
        .await
        .expect("pid")
        .expect("a daemon answers");

    backend.delete_device(&name).await.expect("delete");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(
        stat.is_empty() || stat.contains(") Z"),
        "the daemon still runs: {stat}"
    );
    assert!(backend.read_device(&name).await.expect("read").is_none());
    // The kernel tears the TUN link down after the daemon's last descriptor closes,
    // which can lag behind the process exit on a loaded machine.
    assert!(
        eventually(Duration::from_secs(10), async || {
            !ns.exec(&["ip", "link", "show", "dev", name.as_str()])
                .status
                .success()
        })
        .await,
        "the interface outlived delete_device"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_death_then_recreate_and_full_resync() {
    let Some(_netns) = require(Suite::Netns, TOOLS) else {
        return;
    };
    let mut ns = Netns::new("restart");
    let name = ns.iface("r");
    let backend = ns.backend();
    backend.create_device(&name).await.expect("create");

    let key = PrivateKey::generate();
    let peers: Vec<PeerDelta> = (0..3u8)
        .map(|i| PeerDelta {
            endpoint: Some(SocketAddr::new(
                "2001:db8::1".parse().expect("ip"),
                51_000 + u16::from(i),
            )),
            allowed_ips: vec![format!("fd00:9::{i}/128").parse().expect("net")],
            ..PeerDelta::new(PrivateKey::generate().public_key())
        })
        .collect();
    let desired = DeviceDelta {
        private_key: Some(key.clone()),
        listen_port: Some(51_820),
        peers: peers.clone(),
        ..DeviceDelta::default()
    };
    backend.apply_device(&name, &desired).await.expect("apply");
    let before = backend
        .read_device(&name)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(before.peers.len(), 3);

    // The daemon dies (SIGKILL: no cleanup, its socket stays behind).
    let pid = backend.child_pid(&name).expect("we started it");
    assert_eq!(
        backend.daemon_pid(&name).await.expect("pid"),
        i32::try_from(pid).ok()
    );
    let pid = rustix::process::Pid::from_raw(i32::try_from(pid).expect("pid")).expect("pid");
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).expect("kill our daemon");
    assert!(
        eventually(Duration::from_secs(10), async || {
            // Calls racing with the death may fail (truncated reply); then it reads as gone.
            matches!(backend.read_device(&name).await, Ok(None))
        })
        .await,
        "a dead daemon must read as no device"
    );
    let e = backend
        .apply_device(&name, &desired)
        .await
        .expect_err("no daemon");
    assert!(
        matches!(e, wgm_core::Error::NotFound { kind: "device", .. }),
        "{e}"
    );

    // Recreate: a fresh, empty device; a full resync brings the configuration back.
    backend.create_device(&name).await.expect("recreate");
    let fresh = backend
        .read_device(&name)
        .await
        .expect("read")
        .expect("exists");
    assert!(fresh.peers.is_empty() && fresh.public_key.is_none());
    let resync = DeviceDelta {
        replace_peers: true,
        ..desired.clone()
    };
    backend.apply_device(&name, &resync).await.expect("resync");
    let after = backend
        .read_device(&name)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(after.public_key, Some(key.public_key()));
    assert_eq!(after.listen_port, 51_820);
    assert_eq!(after.peers.len(), 3);
    for (k, p) in &before.peers {
        assert_eq!(after.peers[k].allowed_ips, p.allowed_ips);
        assert_eq!(after.peers[k].endpoint, p.endpoint);
    }

    // The interface deleted out of band (F7): the daemon goes with it.
    ns.ip(&["link", "del", name.as_str()]);
    assert!(
        eventually(Duration::from_secs(10), async || {
            // Calls racing with the death may fail (truncated reply); then it reads as gone.
            matches!(backend.read_device(&name).await, Ok(None))
        })
        .await,
        "a deleted interface must read as no device"
    );
    backend
        .create_device(&name)
        .await
        .expect("create after link del");
    assert!(backend.read_device(&name).await.expect("read").is_some());
    backend.delete_device(&name).await.expect("delete");
    assert!(backend.read_device(&name).await.expect("read").is_none());
    assert!(backend.child_pid(&name).is_none());
    // delete_device returns once the daemon has exited, so the interface is gone too.
    // The kernel tears the TUN link down after the daemon's last descriptor closes,
    // which can lag behind the process exit on a loaded machine.
    assert!(
        eventually(Duration::from_secs(10), async || {
            !ns.exec(&["ip", "link", "show", "dev", name.as_str()])
                .status
                .success()
        })
        .await,
        "the interface outlived delete_device"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_between_two_namespaces() {
    let Some(_netns) = require(Suite::Netns, TOOLS) else {
        return;
    };
    let mut a = Netns::new("a");
    let mut b = Netns::new("b");
    let (wa, wb) = (a.iface("a"), b.iface("b"));
    let (va, vb) = (
        format!("wgmva{}", std::process::id()),
        format!("wgmvb{}", std::process::id()),
    );
    run(&[
        "ip", "link", "add", &va, "netns", &a.name, "type", "veth", "peer", "name", &vb, "netns",
        &b.name,
    ]);
    for (ns, veth, v6, v4) in [
        (&a, &va, "fd99::1/64", "192.168.99.1/24"),
        (&b, &vb, "fd99::2/64", "192.168.99.2/24"),
    ] {
        ns.ip(&["addr", "add", v6, "dev", veth, "nodad"]);
        ns.ip(&["addr", "add", v4, "dev", veth]);
        ns.ip(&["link", "set", veth, "up"]);
    }

    let (ba, bb) = (a.backend(), b.backend());
    ba.create_device(&wa).await.expect("create a");
    bb.create_device(&wb).await.expect("create b");
    let (ka, kb) = (PrivateKey::generate(), PrivateKey::generate());
    let net = |s: &str| s.parse().expect("net");
    let server = DeviceDelta {
        private_key: Some(ka.clone()),
        listen_port: Some(51_820),
        peers: vec![PeerDelta {
            allowed_ips: vec![net("fd10::2/128"), net("10.10.0.2/32")],
            ..PeerDelta::new(kb.public_key())
        }],
        ..DeviceDelta::default()
    };
    let client = DeviceDelta {
        private_key: Some(kb.clone()),
        peers: vec![PeerDelta {
            endpoint: Some("[fd99::1]:51820".parse().expect("endpoint")),
            persistent_keepalive: Some(25),
            allowed_ips: vec![net("fd10::1/128"), net("10.10.0.1/32")],
            ..PeerDelta::new(ka.public_key())
        }],
        ..DeviceDelta::default()
    };
    ba.apply_device(&wa, &server).await.expect("configure a");
    bb.apply_device(&wb, &client).await.expect("configure b");
    for (ns, w, v6, v4) in [
        (&a, &wa, "fd10::1/64", "10.10.0.1/24"),
        (&b, &wb, "fd10::2/64", "10.10.0.2/24"),
    ] {
        ns.ip(&["addr", "add", v6, "dev", w.as_str(), "nodad"]);
        ns.ip(&["addr", "add", v4, "dev", w.as_str()]);
        ns.ip(&["link", "set", w.as_str(), "up"]);
    }

    let ping6 = b.exec(&["ping", "-6", "-c", "5", "-i", "0.2", "-W", "2", "fd10::1"]);
    assert!(
        ping6.status.success(),
        "ping -6 failed: {}",
        String::from_utf8_lossy(&ping6.stdout)
    );
    let ping4 = b.exec(&["ping", "-c", "5", "-i", "0.2", "-W", "2", "10.10.0.1"]);
    assert!(
        ping4.status.success(),
        "ping failed: {}",
        String::from_utf8_lossy(&ping4.stdout)
    );

    let sa = ba
        .read_device(&wa)
        .await
        .expect("read a")
        .expect("a exists");
    let peer_b = &sa.peers[&kb.public_key()];
    assert!(peer_b.last_handshake.is_some(), "server saw no handshake");
    assert!(peer_b.rx_bytes > 0 && peer_b.tx_bytes > 0, "{peer_b:?}");
    let roamed = peer_b
        .endpoint
        .expect("the server learnt the client's endpoint");
    assert_eq!(
        roamed.ip(),
        "fd99::2".parse::<std::net::IpAddr>().expect("ip")
    );
    let sb = bb
        .read_device(&wb)
        .await
        .expect("read b")
        .expect("b exists");
    let peer_a = &sb.peers[&ka.public_key()];
    assert!(
        peer_a.last_handshake.is_some() && peer_a.rx_bytes > 0 && peer_a.tx_bytes > 0,
        "{peer_a:?}"
    );
    eprintln!(
        "tunnel up: server rx {} tx {}, client rx {} tx {}",
        peer_b.rx_bytes, peer_b.tx_bytes, peer_a.rx_bytes, peer_a.tx_bytes
    );

    ba.delete_device(&wa).await.expect("delete a");
    bb.delete_device(&wb).await.expect("delete b");
}
