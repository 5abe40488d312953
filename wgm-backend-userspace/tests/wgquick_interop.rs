//! Interop of wgm's wg-quick renderer with the real tools.
//!
//! Every configuration rendered here goes through `wg-quick strip` and `wg setconf` into
//! a wireguard-go device inside a private network namespace, and `wg show dump` must
//! report exactly the keys, peers, allowed IPs, endpoints and keepalives the typed
//! configuration holds. A second test renders a server and a client config, loads both
//! the same way into two namespaces joined by a veth pair (IPv6 underlay), and pings
//! across the tunnel over IPv6 and IPv4.
//!
//! Opt-in: `WGM_TEST_NETNS=1`, as root, with `ip`, `wg`, `wg-quick` and `wireguard-go`
//! installed (with the switch on, a missing one fails the test). With the switch off the
//! binary prints one `SKIPPED` line and its tests pass without running.
//!
//! ```text
//! WGM_TEST_NETNS=1 cargo test -p wgm-backend-userspace --test wgquick_interop
//! ```

// Tests panic on unexpected results by design.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ipnet::IpNet;
use wgm_core::keys::{PresharedKey, PrivateKey};
use wgm_core::net::{DnsEntry, Endpoint, FwMark, Keepalive, ListenPort, Mtu};
use wgm_core::wgquick::{self, ParseOptions, PeerSection, Table, WgQuickConfig};

// ---------------------------------------------------------------------------------------
// Environment
// ---------------------------------------------------------------------------------------

mod common;
use common::{output, run};
use wgm_test_support::{require, Suite};

const TOOLS: &[&str] = &["ip", "wg", "wg-quick", "wireguard-go", "ping"];

/// A unique suffix: process id and a counter (tests in one binary run in parallel).
fn unique(tag: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{tag}{}{}",
        std::process::id() % 100_000,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

// ---------------------------------------------------------------------------------------
// A network namespace with wireguard-go devices, removed on drop
// ---------------------------------------------------------------------------------------

struct Netns {
    name: String,
    /// Interface names whose UAPI sockets we created (the socket directory is shared
    /// by all namespaces).
    devices: Vec<String>,
}

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("wgm-wgq-{}", unique(tag));
        run("ip", &["netns", "add", &name]);
        run("ip", &["-n", &name, "link", "set", "lo", "up"]);
        Netns {
            name,
            devices: Vec::new(),
        }
    }

    fn exec(&self, args: &[&str]) -> String {
        let mut full = vec!["netns", "exec", self.name.as_str()];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Start wireguard-go for `iface` in this namespace and wait for its UAPI socket.
    fn start_wireguard_go(&mut self, iface: &str) {
        self.devices.push(iface.to_owned());
        self.exec(&["wireguard-go", iface]);
        let socket = Path::new("/var/run/wireguard").join(format!("{iface}.sock"));
        // Readiness, not timing: wait (bounded) until the daemon has created its socket.
        for _ in 0..200 {
            if socket.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("wireguard-go did not create {}", socket.display());
    }

    /// Process ids inside this namespace: only the daemons this test started.
    fn pids(&self) -> Vec<i32> {
        output("ip", &["netns", "pids", &self.name])
            .stdout
            .split(|&b| b == b'\n')
            .filter_map(|l| std::str::from_utf8(l).ok()?.trim().parse().ok())
            .collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        use rustix::process::{kill_process, Pid, Signal};
        for pid in self.pids() {
            if let Some(pid) = Pid::from_raw(pid) {
                let _ = kill_process(pid, Signal::TERM);
            }
        }
        for _ in 0..100 {
            if self.pids().is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        for pid in self.pids() {
            if let Some(pid) = Pid::from_raw(pid) {
                let _ = kill_process(pid, Signal::KILL);
            }
        }
        let _ = output("ip", &["netns", "del", &self.name]);
        for iface in &self.devices {
            let _ = std::fs::remove_file(format!("/var/run/wireguard/{iface}.sock"));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Render -> wg-quick strip -> wg setconf -> wg show dump
// ---------------------------------------------------------------------------------------

/// Write `text` as `<iface>.conf` (mode 0600) in `dir` and return `wg-quick strip`'s
/// output for it.
fn strip(dir: &Path, iface: &str, text: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(format!("{iface}.conf"));
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    run("wg-quick", &["strip", path.to_str().unwrap()])
}

/// Load a rendered config into `iface` in `ns` the way wg-quick does.
fn setconf(ns: &Netns, dir: &Path, iface: &str, cfg: &WgQuickConfig) {
    let text = wgquick::render(cfg).unwrap();
    // What we rendered is what we parse back, before any tool sees it.
    assert_eq!(
        &wgquick::parse(&text, &ParseOptions::default()).unwrap(),
        cfg
    );
    let stripped = strip(dir, iface, &text);
    for gone in ["Address", "DNS", "MTU", "Table", "SaveConfig", "PostUp"] {
        let kept = stripped
            .lines()
            .any(|l| l.starts_with(&format!("{gone} =")));
        assert!(!kept, "strip kept {gone}:\n{stripped}");
    }
    let wg_conf = dir.join(format!("{iface}.wg"));
    std::fs::write(&wg_conf, &stripped).unwrap();
    ns.exec(&["wg", "setconf", iface, wg_conf.to_str().unwrap()]);
}

#[derive(Debug, PartialEq)]
struct DumpPeer {
    psk: Option<String>,
    endpoint: Option<SocketAddr>,
    allowed: BTreeSet<IpNet>,
    keepalive: u16,
}

#[derive(Debug)]
struct Dump {
    private_key: String,
    public_key: String,
    listen_port: u16,
    fwmark: u32,
    peers: BTreeMap<String, DumpPeer>,
}

fn none_or(s: &str) -> Option<&str> {
    (s != "(none)" && s != "off").then_some(s)
}

fn dump(ns: &Netns, iface: &str) -> Dump {
    let text = ns.exec(&["wg", "show", iface, "dump"]);
    let mut lines = text.lines();
    let head: Vec<&str> = lines.next().expect("interface line").split('\t').collect();
    let fwmark = none_or(head[3]).map_or(0, |m| {
        u32::from_str_radix(m.trim_start_matches("0x"), 16).expect("hex fwmark")
    });
    let mut peers = BTreeMap::new();
    for line in lines {
        let f: Vec<&str> = line.split('\t').collect();
        assert_eq!(f.len(), 8, "peer line: {line}");
        let allowed = none_or(f[3])
            .map(|list| {
                list.split(',')
                    .map(|n| n.parse().expect("allowed ip"))
                    .collect()
            })
            .unwrap_or_default();
        peers.insert(
            f[0].to_owned(),
            DumpPeer {
                psk: none_or(f[1]).map(str::to_owned),
                endpoint: none_or(f[2]).map(|e| e.parse().expect("endpoint")),
                allowed,
                keepalive: none_or(f[7]).map_or(0, |k| k.parse().expect("keepalive")),
            },
        );
    }
    Dump {
        private_key: head[0].to_owned(),
        public_key: head[1].to_owned(),
        listen_port: head[2].parse().expect("port"),
        fwmark,
        peers,
    }
}

/// Check that the device holds exactly what `cfg` says.
fn assert_device_matches(d: &Dump, cfg: &WgQuickConfig) {
    let key = cfg
        .interface
        .private_key
        .as_ref()
        .expect("configs here carry a private key");
    assert_eq!(d.private_key, *key.expose_base64());
    assert_eq!(d.public_key, key.public_key().to_base64());
    if let Some(port) = cfg.interface.listen_port {
        assert_eq!(d.listen_port, port.get());
    }
    assert_eq!(d.fwmark, cfg.interface.fwmark.map_or(0, FwMark::get));
    assert_eq!(d.peers.len(), cfg.peers.len());
    for peer in &cfg.peers {
        let got = d
            .peers
            .get(&peer.public_key.to_base64())
            .expect("peer on the device");
        let psk = peer
            .preshared_key
            .as_ref()
            .map(|k| k.expose_base64().to_string());
        assert_eq!(got.psk, psk);
        assert_eq!(
            got.allowed,
            peer.allowed_ips.iter().copied().collect::<BTreeSet<_>>()
        );
        assert_eq!(
            got.keepalive,
            peer.persistent_keepalive.map_or(0, Keepalive::get)
        );
        match &peer.endpoint {
            None => assert_eq!(got.endpoint, None),
            Some(Endpoint::Addr(a)) => assert_eq!(got.endpoint, Some(*a)),
            Some(Endpoint::Host { host, port }) => {
                let resolved: Vec<SocketAddr> =
                    (host.as_str(), *port).to_socket_addrs().unwrap().collect();
                let e = got.endpoint.expect("resolved endpoint");
                assert!(resolved.contains(&e), "{e} not among {resolved:?}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Configurations
// ---------------------------------------------------------------------------------------

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

/// A server with many peers: dual-stack host routes, routed prefixes, some PSKs, names.
fn server_config(peers: usize) -> WgQuickConfig {
    let mut cfg = WgQuickConfig {
        comments: vec!["wgm interop test: server".into()],
        ..WgQuickConfig::default()
    };
    cfg.interface.name = Some("office".into());
    cfg.interface.private_key = Some(PrivateKey::generate());
    cfg.interface.addresses = vec![net("10.60.0.1/16"), net("fd60::1/64")];
    cfg.interface.listen_port = Some(ListenPort::new(51820).unwrap());
    cfg.interface.fwmark = Some(FwMark::new(0xca6c).unwrap());
    cfg.interface.mtu = Some(Mtu::new(1420).unwrap());
    cfg.interface.table = Some(Table::Off);
    cfg.interface.save_config = Some(false);
    for i in 0..peers {
        let mut p = PeerSection::new(PrivateKey::generate().public_key());
        p.name = Some(format!("peer-{i}"));
        let (hi, lo) = ((i + 2) / 256, (i + 2) % 256);
        p.allowed_ips = vec![
            net(&format!("10.60.{hi}.{lo}/32")),
            net(&format!("fd60::{:x}/128", i + 2)),
        ];
        if i % 3 == 0 {
            p.preshared_key = Some(PresharedKey::generate());
        }
        if i % 10 == 0 {
            // A routed site: a delegated /56 out of a /48, and an IPv4 LAN.
            p.allowed_ips
                .push(net(&format!("fd61:0:0:{:x}00::/56", i / 10)));
            p.allowed_ips.push(net(&format!("192.168.{}.0/24", i / 10)));
        }
        cfg.peers.push(p);
    }
    cfg
}

/// A client: DNS servers and a search domain, MTU, an IPv6 endpoint, PSK, keepalive.
fn client_config(server_public: wgm_core::keys::PublicKey, endpoint: &str) -> WgQuickConfig {
    let mut cfg = WgQuickConfig::default();
    cfg.interface.name = Some("alice-laptop".into());
    cfg.interface.private_key = Some(PrivateKey::generate());
    cfg.interface.addresses = vec![net("10.60.0.2/32"), net("fd60::2/128")];
    cfg.interface.dns = vec![
        DnsEntry::Addr("fd60::1".parse().unwrap()),
        DnsEntry::Addr("10.60.0.1".parse().unwrap()),
        DnsEntry::SearchDomain("office.example".into()),
    ];
    cfg.interface.mtu = Some(Mtu::new(1380).unwrap());
    let mut p = PeerSection::new(server_public);
    p.name = Some("office".into());
    p.preshared_key = Some(PresharedKey::generate());
    p.allowed_ips = vec![net("0.0.0.0/0"), net("::/0")];
    p.endpoint = Some(endpoint.parse().unwrap());
    p.persistent_keepalive = Some(Keepalive::new(25).unwrap());
    cfg.peers.push(p);
    cfg
}

/// Peers with every endpoint form and keepalive off.
fn multi_site_config() -> WgQuickConfig {
    let mut cfg = WgQuickConfig::default();
    cfg.interface.private_key = Some(PrivateKey::generate());
    cfg.interface.listen_port = Some(ListenPort::new(40000).unwrap());
    for (i, endpoint) in [
        "[2001:db8:1::1]:51820",
        "203.0.113.9:443",
        "localhost:51999",
        "[fd00:abcd::7]:1",
    ]
    .iter()
    .enumerate()
    {
        let mut p = PeerSection::new(PrivateKey::generate().public_key());
        p.allowed_ips = vec![net(&format!("10.{i}.0.0/16")), net(&format!("fd0{i}::/48"))];
        p.endpoint = Some(endpoint.parse().unwrap());
        p.persistent_keepalive = Some(if i % 2 == 0 {
            Keepalive::OFF
        } else {
            Keepalive::new(15).unwrap()
        });
        cfg.peers.push(p);
    }
    cfg
}

/// The hand-written fixtures of wgm-core, parsed and re-rendered by wgm. Host endpoints
/// become `localhost` (the namespace has no DNS) and hooks are dropped.
fn fixture_configs() -> Vec<(String, WgQuickConfig)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../wgm-core/tests/fixtures/wgquick");
    let mut out = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for path in names {
        let text = std::fs::read_to_string(&path).unwrap();
        let opts = ParseOptions {
            allow_hooks: true,
            ..ParseOptions::default()
        };
        let mut cfg = wgquick::parse(&text, &opts).unwrap();
        cfg.interface.hooks = wgquick::Hooks::default();
        for p in &mut cfg.peers {
            if let Some(Endpoint::Host { port, .. }) = p.endpoint {
                p.endpoint = Some(Endpoint::Host {
                    host: "localhost".into(),
                    port,
                });
            }
        }
        out.push((
            path.file_name().unwrap().to_string_lossy().into_owned(),
            cfg,
        ));
    }
    out
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[test]
fn rendered_configs_load_into_wireguard_go() {
    let Some(_netns) = require(Suite::Netns, TOOLS) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut ns = Netns::new("load");
    let iface = unique("wgq");
    ns.start_wireguard_go(&iface);

    let server = server_config(300);
    let server_public = server.interface.private_key.as_ref().unwrap().public_key();
    let mut cases = vec![
        ("server with 300 peers".to_owned(), server),
        (
            "client, IPv6 endpoint".to_owned(),
            client_config(server_public, "[2001:db8::1]:51820"),
        ),
        (
            "client, IPv4 endpoint".to_owned(),
            client_config(server_public, "198.51.100.1:51820"),
        ),
        ("multi-site".to_owned(), multi_site_config()),
    ];
    cases.extend(fixture_configs());
    for (what, cfg) in &cases {
        setconf(&ns, dir.path(), &iface, cfg);
        let d = dump(&ns, &iface);
        assert_device_matches(&d, cfg);
        eprintln!("ok: {what}: {} peers", d.peers.len());
    }
}

#[test]
fn rendered_server_and_client_bring_the_tunnel_up() {
    let Some(_netns) = require(Suite::Netns, TOOLS) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut server_ns = Netns::new("srv");
    let mut client_ns = Netns::new("cli");
    let (siface, ciface) = (unique("wgs"), unique("wgc"));
    let (sveth, cveth) = (unique("vs"), unique("vc"));

    // Underlay: IPv6 only, so the client's endpoint is a bracketed IPv6 address.
    run(
        "ip",
        &[
            "link",
            "add",
            &sveth,
            "netns",
            &server_ns.name,
            "type",
            "veth",
            "peer",
            "name",
            &cveth,
            "netns",
            &client_ns.name,
        ],
    );
    server_ns.ip(&["addr", "add", "fd99::1/64", "dev", &sveth, "nodad"]);
    client_ns.ip(&["addr", "add", "fd99::2/64", "dev", &cveth, "nodad"]);
    server_ns.ip(&["link", "set", &sveth, "up"]);
    client_ns.ip(&["link", "set", &cveth, "up"]);

    let mut server = server_config(20);
    let client = client_config(
        server.interface.private_key.as_ref().unwrap().public_key(),
        "[fd99::1]:51820",
    );
    // The server's entry for this client: its tunnel addresses as host routes.
    let mut entry = PeerSection::new(client.interface.private_key.as_ref().unwrap().public_key());
    entry.name = Some("alice-laptop".into());
    entry.preshared_key = client.peers[0].preshared_key.clone();
    entry.allowed_ips = vec![net("10.60.255.2/32"), net("fd60::ff:2/128")];
    server.peers.push(entry);
    let mut client = client;
    client.interface.addresses = vec![net("10.60.255.2/32"), net("fd60::ff:2/128")];

    for (ns, iface, cfg) in [
        (&mut server_ns, &siface, &server),
        (&mut client_ns, &ciface, &client),
    ] {
        ns.start_wireguard_go(iface);
        setconf(ns, dir.path(), iface, cfg);
        assert_device_matches(&dump(ns, iface), cfg);
        // What wg-quick does next, from the same typed config.
        for a in &cfg.interface.addresses {
            ns.ip(&["addr", "add", &a.to_string(), "dev", iface]);
        }
        let mtu = cfg.interface.mtu.unwrap().get().to_string();
        ns.ip(&["link", "set", iface, "mtu", &mtu, "up"]);
    }
    // The client routes the server's subnets into the tunnel (full tunnel would also
    // take the underlay's route; the two prefixes are enough to test).
    client_ns.ip(&["route", "add", "10.60.0.0/16", "dev", &ciface]);
    client_ns.ip(&["-6", "route", "add", "fd60::/64", "dev", &ciface]);

    for target in ["fd60::1", "10.60.0.1"] {
        // The first echo may be spent on the handshake: a few tries, each bounded.
        let ok = (0..5).any(|_| {
            let out = output(
                "ip",
                &[
                    "netns",
                    "exec",
                    &client_ns.name,
                    "ping",
                    "-c",
                    "1",
                    "-W",
                    "2",
                    target,
                ],
            );
            out.status.success()
        });
        assert!(ok, "no reply from {target} through the tunnel");
    }
    let d = dump(&server_ns, &siface);
    let line = server_ns.exec(&["wg", "show", &siface, "latest-handshakes"]);
    let client_key = client
        .interface
        .private_key
        .as_ref()
        .unwrap()
        .public_key()
        .to_base64();
    assert!(d.peers.contains_key(&client_key));
    let handshake = line
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{client_key}\t")))
        .expect("client in latest-handshakes");
    assert_ne!(
        handshake.trim(),
        "0",
        "the server saw a handshake from the client"
    );
}
