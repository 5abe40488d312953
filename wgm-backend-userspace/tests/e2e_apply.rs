//! End to end: a server created through the `Manager` is applied by the reconciler to a
//! wireguard-go device (`UserspaceBackend`) and its link (`KernelNetwork`) in one
//! network namespace; the client config the library renders is loaded, through
//! `wg-quick strip` and `wg setconf`, into another wireguard-go device in a second
//! namespace; the two are joined by a veth pair (the endpoint network, IPv6 and IPv4).
//!
//! - `tunnel_up_between_manager_server_and_wg_quick_client`: `ping -6` and `ping` cross
//!   the tunnel; the handshake and transfer counters read back through
//!   `Manager::status` are non-zero for the peer.
//! - `incremental_apply_keeps_a_live_tunnel_untouched`: while pings flow to peer A, a
//!   peer is added, another gets an extra network and a third is removed, and `apply`
//!   runs: the plan never names A and never replaces peers, A's handshake time is the
//!   same afterwards and its counters only grew, and not one ping is lost.
//! - `drift_is_restored_and_a_deleted_interface_recreated`: `wg set` changes a managed
//!   peer and adds an unmanaged one; `apply` restores the managed one and reports (policy
//!   `report`) or removes (policy `remove`) the other; `ip link del` takes the interface
//!   (and with it the wireguard-go daemon) away; the next `apply` recreates the device
//!   and the tunnel works again.
//!
//! Each of the first three also runs on kernel WireGuard (`KernelWireGuard` for the
//! server, a kernel `wireguard` link for the client), as `kernel_<name>`: the same
//! steps, with the link's interface index as the device instance instead of a daemon.
//!
//! Opt-in: `WGM_TEST_NETNS=1` for wireguard-go and `WGM_TEST_KERNEL=1` for the kernel
//! (run inside the VM of `.ci/vm`, since the CI machines' kernel has no WireGuard), as
//! root, with `ip`, `wireguard-go` (userspace only), `wg`, `wg-quick` and `ping`
//! installed (with the switch on, a missing one fails the test; off, the binary
//! prints one `SKIPPED` line and its tests pass without running). Each test makes its
//! own namespaces (pid and a counter in their names) and a guard removes them on every
//! exit path, after killing by pid the daemons the test started.
//!
//! ```text
//! WGM_TEST_NETNS=1 cargo test -p wgm-backend-userspace --test e2e_apply -- --test-threads=1
//! ```

use std::net::IpAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use wgm_backend_kernel::{KernelNetwork, KernelWireGuard};
use wgm_backend_userspace::{DaemonCommand, UserspaceBackend, UserspaceConfig, DEFAULT_SOCKET_DIR};
use wgm_core::backend::WireGuardBackend;
use wgm_core::keys::{PrivateKey, PublicKey};
use wgm_core::manager::{
    ApplyOptions, ApplyReport, Host, Manager, NewPeer, NewServer, PeerStatus, PeerUpdate,
};
use wgm_core::model::{PeerId, ServerId, TunnelMode};
use wgm_core::names::{InterfaceName, PeerName, ServerName};
use wgm_core::net::{Endpoint, ListenPort};
use wgm_core::rbac::Principal;
use wgm_core::reconcile::{DriftPolicy, Plan, PlanItem};
use wgm_core::seal::{MasterKey, Sealer};
use wgm_core::store::MemoryStore;

// ---------------------------------------------------------------------------------------
// Environment
// ---------------------------------------------------------------------------------------

mod common;
use common::{eventually, output, run};
use wgm_test_support::{require, Suite};

const TOOLS: &[&str] = &["ip", "wireguard-go", "wg", "wg-quick", "ping"];
/// The same without wireguard-go: both ends are kernel WireGuard.
const KERNEL_TOOLS: &[&str] = &["ip", "wg", "wg-quick", "ping"];

/// Which WireGuard the server (and the client) run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flavor {
    /// wireguard-go over UAPI (`UserspaceBackend`) on both ends; suite `netns`.
    Userspace,
    /// Kernel WireGuard over netlink (`KernelWireGuard`) on both ends; suite `kernel`
    /// (run in the VM by `.ci/vm`).
    Kernel,
}

impl Flavor {
    /// Whether the test may run here: `false` skips (its suite is switched off); a
    /// switched-on suite whose resource is missing fails the test.
    fn granted(self) -> bool {
        match self {
            Flavor::Userspace => require(Suite::Netns, TOOLS).is_some(),
            Flavor::Kernel => require(Suite::Kernel, KERNEL_TOOLS).is_some(),
        }
    }
}

/// Whether process `pid` is gone (absent, or a zombie).
fn process_gone(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return true;
    };
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next())
        .is_none_or(|s| s == 'Z' || s == 'X')
}

fn kill(pid: u32) {
    if let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
}

// ---------------------------------------------------------------------------------------
// The lab: two namespaces joined by veth, cleaned up on drop
// ---------------------------------------------------------------------------------------

/// Underlay (endpoint network) addresses: A's side, B's side.
const UNDERLAY_V6: [&str; 2] = ["fd77::1/64", "fd77::2/64"];
const UNDERLAY_V4: [&str; 2] = ["192.168.77.1/24", "192.168.77.2/24"];
/// The server's endpoint: A's veth address.
const ENDPOINT: &str = "[fd77::1]:51820";
/// The server's pools; the server takes the first address of each.
const POOL_V6: &str = "fd10:77::/64";
const POOL_V4: &str = "10.77.0.0/24";
const SERVER_V6: &str = "fd10:77::1";
const SERVER_V4: &str = "10.77.0.1";
/// Pings per family that flow while the incremental apply runs (0.2 s apart).
const PINGS: u32 = 25;

/// Two network namespaces (A: the managed server, B: the wg-quick client) joined by a
/// veth pair. Dropping it kills the daemons this test started (by pid), removes their
/// sockets and deletes both namespaces (and with them the veth pair).
struct Lab {
    ns_a: String,
    ns_b: String,
    veth_a: String,
    veth_b: String,
    /// The managed interface in A.
    server_iface: InterfaceName,
    /// The client's interface in B.
    client_iface: String,
    flavor: Flavor,
    /// The backend of the managed interface in A.
    backend: Arc<dyn WireGuardBackend>,
    /// The same backend when it is the userspace one, whose daemons run in A.
    userspace: Option<Arc<UserspaceBackend>>,
    /// Pids of the daemons the backend started in A (recorded after each apply).
    server_pids: Vec<u32>,
    /// The client's wireguard-go in B, started by this test in the foreground.
    client_daemon: Option<Child>,
    dir: tempfile::TempDir,
}

impl Lab {
    /// Names everything, then creates the namespaces and the veth pair. A failure on the
    /// way still cleans up: the guard exists before the first namespace does.
    fn new(flavor: Flavor) -> Lab {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let uniq = format!(
            "{:05}{}",
            std::process::id() % 100_000,
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let ns_a = format!("wgme2e-{uniq}-a");
        let ns_b = format!("wgme2e-{uniq}-b");
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("wireguard-go-a.log");
        let (backend, userspace): (Arc<dyn WireGuardBackend>, _) = match flavor {
            Flavor::Userspace => {
                let u = Arc::new(UserspaceBackend::new(UserspaceConfig {
                    daemon: DaemonCommand::wireguard_go()
                        .in_netns(&ns_a)
                        .with_log_file(log),
                    ..UserspaceConfig::default()
                }));
                (u.clone(), Some(u))
            }
            Flavor::Kernel => (
                Arc::new(KernelWireGuard::in_netns(format!("/run/netns/{ns_a}"))),
                None,
            ),
        };
        let lab = Lab {
            flavor,
            userspace,
            veth_a: format!("wgmea{uniq}"),
            veth_b: format!("wgmeb{uniq}"),
            server_iface: InterfaceName::new(format!("wgs{uniq}")).expect("valid name"),
            client_iface: format!("wgc{uniq}"),
            backend,
            server_pids: Vec::new(),
            client_daemon: None,
            dir,
            ns_a,
            ns_b,
        };
        for ns in [&lab.ns_a, &lab.ns_b] {
            run("ip", &["netns", "add", ns]);
            run("ip", &["-n", ns, "link", "set", "lo", "up"]);
        }
        run(
            "ip",
            &[
                "link",
                "add",
                &lab.veth_a,
                "netns",
                &lab.ns_a,
                "type",
                "veth",
                "peer",
                "name",
                &lab.veth_b,
                "netns",
                &lab.ns_b,
            ],
        );
        for (i, (ns, veth)) in [(&lab.ns_a, &lab.veth_a), (&lab.ns_b, &lab.veth_b)]
            .into_iter()
            .enumerate()
        {
            Lab::ip(ns, &["addr", "add", UNDERLAY_V6[i], "dev", veth, "nodad"]);
            Lab::ip(ns, &["addr", "add", UNDERLAY_V4[i], "dev", veth]);
            Lab::ip(ns, &["link", "set", veth, "up"]);
        }
        lab
    }

    fn ip(ns: &str, args: &[&str]) -> String {
        let mut full = vec!["-n", ns];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// `ip netns exec NS args…`, returning the output whatever the exit status.
    fn exec(ns: &str, args: &[&str]) -> Output {
        let mut full = vec!["netns", "exec", ns];
        full.extend_from_slice(args);
        output("ip", &full)
    }

    /// The reconciler's host: the lab's WireGuard backend and rtnetlink, both in A.
    fn host(&self) -> Host {
        let net = KernelNetwork::in_netns(format!("/run/netns/{}", self.ns_a))
            .expect("rtnetlink socket in namespace A");
        Host::new("e2e-a", self.backend.clone(), Some(Arc::new(net)))
    }

    /// Remember the pid of the daemon now serving the managed interface, for cleanup.
    /// `None` for kernel WireGuard, which has no daemon.
    fn note_server_daemon(&mut self) -> Option<u32> {
        let pid = self.userspace.as_ref()?.child_pid(&self.server_iface)?;
        if !self.server_pids.contains(&pid) {
            self.server_pids.push(pid);
        }
        Some(pid)
    }

    /// Create the client's WireGuard interface in B: a kernel link, or wireguard-go (in
    /// the foreground, as our child) once its UAPI socket answers.
    fn create_client_device(&mut self) {
        if self.flavor == Flavor::Kernel {
            Self::ip(
                &self.ns_b,
                &["link", "add", &self.client_iface, "type", "wireguard"],
            );
            return;
        }
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns_b,
                "wireguard-go",
                "-f",
                &self.client_iface,
            ])
            .env("WG_PROCESS_FOREGROUND", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start wireguard-go in B");
        self.client_daemon = Some(child);
        let socket = Path::new(DEFAULT_SOCKET_DIR).join(format!("{}.sock", self.client_iface));
        for _ in 0..200 {
            if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("wireguard-go in B did not open {}", socket.display());
    }

    /// Bring the client up in B the way wg-quick would, from the config the library
    /// rendered: `wg-quick strip` + `wg setconf` into a fresh device, then the
    /// `Address` lines with `ip addr add`, `MTU` and link up, a route per `AllowedIPs`.
    fn client_up(&mut self, config_text: &str) {
        use std::os::unix::fs::PermissionsExt;
        let conf = self.dir.path().join(format!("{}.conf", self.client_iface));
        std::fs::write(&conf, config_text).expect("write client config");
        std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
        let stripped = run("wg-quick", &["strip", conf.to_str().expect("utf-8 path")]);
        let setconf = self
            .dir
            .path()
            .join(format!("{}.setconf", self.client_iface));
        std::fs::write(&setconf, &stripped).expect("write stripped config");
        std::fs::set_permissions(&setconf, std::fs::Permissions::from_mode(0o600))
            .expect("chmod 600");

        self.create_client_device();
        let out = Self::exec(
            &self.ns_b,
            &[
                "wg",
                "setconf",
                &self.client_iface,
                setconf.to_str().expect("utf-8 path"),
            ],
        );
        assert!(
            out.status.success(),
            "wg setconf in B failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );

        let lines = WgQuickLines::of(config_text);
        assert!(
            !lines.addresses.is_empty(),
            "the client config has no Address line:\n{config_text}"
        );
        let (ns, dev) = (self.ns_b.clone(), self.client_iface.clone());
        for a in &lines.addresses {
            let a = a.to_string();
            if a.contains(':') {
                Self::ip(&ns, &["addr", "add", &a, "dev", &dev, "nodad"]);
            } else {
                Self::ip(&ns, &["addr", "add", &a, "dev", &dev]);
            }
        }
        if let Some(mtu) = lines.mtu {
            Self::ip(&ns, &["link", "set", "dev", &dev, "mtu", &mtu.to_string()]);
        }
        Self::ip(&ns, &["link", "set", "dev", &dev, "up"]);
        for net in &lines.allowed_ips {
            Self::ip(&ns, &["route", "add", &net.to_string(), "dev", &dev]);
        }
    }

    /// `ping` from B (`-6` when `target` is IPv6): `count` packets every 0.2 s.
    fn ping(&self, target: &str, count: u32) -> Output {
        let count = count.to_string();
        let mut args = vec!["ping"];
        if target.contains(':') {
            args.push("-6");
        }
        args.extend_from_slice(&["-c", &count, "-i", "0.2", "-W", "2", target]);
        Self::exec(&self.ns_b, &args)
    }

    /// The same ping started in the background (killed if dropped before it ends).
    fn ping_background(&self, target: &str, count: u32) -> tokio::process::Child {
        let count = count.to_string();
        let mut args = vec!["netns", "exec", self.ns_b.as_str(), "ping"];
        if target.contains(':') {
            args.push("-6");
        }
        args.extend_from_slice(&["-c", &count, "-i", "0.2", "-W", "2", target]);
        tokio::process::Command::new("ip")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start ping in B")
    }

    /// Single pings (`-c 1 -W 1`) until one is answered, at most `tries`.
    async fn ping_until_answered(&self, target: &str, tries: u32) -> bool {
        for _ in 0..tries {
            if self.ping(target, 1).status.success() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Only the daemons this test started, by pid: the client's, and the ones the
        // backend started for the managed interface (the current one and any earlier).
        if let Some(mut child) = self.client_daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.note_server_daemon();
        for &pid in &self.server_pids {
            kill(pid);
        }
        for _ in 0..100 {
            if self.server_pids.iter().all(|&pid| process_gone(pid)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for iface in [self.server_iface.as_str(), self.client_iface.as_str()] {
            let _ =
                std::fs::remove_file(Path::new(DEFAULT_SOCKET_DIR).join(format!("{iface}.sock")));
        }
        for ns in [&self.ns_a, &self.ns_b] {
            let _ = output("ip", &["netns", "del", ns]);
        }
    }
}

/// The lines of a wg-quick file that wg-quick itself acts on with `ip` (read here with
/// a few lines of code of our own, not with the library's parser).
#[derive(Debug, Default)]
struct WgQuickLines {
    addresses: Vec<IpNet>,
    mtu: Option<u32>,
    allowed_ips: Vec<IpNet>,
}

impl WgQuickLines {
    fn of(text: &str) -> WgQuickLines {
        let mut out = WgQuickLines::default();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or_default();
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let list = || -> Vec<IpNet> {
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .map(|v| v.parse().unwrap_or_else(|e| panic!("{v}: {e}")))
                    .collect()
            };
            match key.trim().to_ascii_lowercase().as_str() {
                "address" => out.addresses.extend(list()),
                "allowedips" => out.allowed_ips.extend(list()),
                "mtu" => out.mtu = Some(value.trim().parse().expect("MTU is a number")),
                _ => {}
            }
        }
        out
    }
}

/// `(transmitted, received)` from ping's summary line "N packets transmitted, M received".
fn ping_summary(stdout: &[u8]) -> (u32, u32) {
    let text = String::from_utf8_lossy(stdout);
    let line = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("no ping summary in:\n{text}"));
    let mut numbers = line
        .split(',')
        .filter_map(|part| part.split_whitespace().next()?.parse::<u32>().ok());
    let sent = numbers.next().expect("transmitted count");
    let received = numbers.next().expect("received count");
    (sent, received)
}

// ---------------------------------------------------------------------------------------
// The managed side: a Manager over an in-memory store
// ---------------------------------------------------------------------------------------

struct Managed {
    m: Manager,
    admin: Principal,
    server: ServerId,
    host: Host,
}

impl Managed {
    /// A dual-stack server on the lab's managed interface, endpoint = A's veth address,
    /// split tunnel (clients route only the server's pools), and `peers`.
    async fn new(lab: &Lab, peers: &[&str]) -> (Managed, Vec<PeerId>) {
        let (m, cap) = Manager::builder(
            Arc::new(MemoryStore::new()),
            Sealer::new(MasterKey::generate()),
        )
        .build_with_local_admin();
        let admin = cap.principal("root");
        let mut spec = NewServer::new(
            ServerName::new("e2e").expect("name"),
            lab.server_iface.clone(),
            ListenPort::new(51_820).expect("port"),
        );
        spec.ipv6_pool = Some(POOL_V6.parse().expect("pool"));
        spec.ipv4_pool = Some(POOL_V4.parse().expect("pool"));
        spec.endpoint = Some(Endpoint::Addr(ENDPOINT.parse().expect("endpoint")));
        spec.client_template.tunnel = TunnelMode::Split;
        let view = m.create_server(&admin, spec).await.expect("create server");
        assert_eq!(view.address_v6.to_string(), SERVER_V6);
        assert_eq!(
            view.address_v4.map(|a| a.to_string()).as_deref(),
            Some(SERVER_V4)
        );
        let mut ids = Vec::new();
        for name in peers {
            let p = m
                .add_peer(
                    &admin,
                    view.id,
                    NewPeer::new(PeerName::new(*name).expect("name")),
                )
                .await
                .expect("add peer");
            ids.push(p.id);
        }
        let managed = Managed {
            host: lab.host(),
            m,
            admin,
            server: view.id,
        };
        (managed, ids)
    }

    async fn apply_with(&self, host: &Host) -> ApplyReport {
        let report = self
            .m
            .apply(&self.admin, self.server, host, ApplyOptions::default())
            .await
            .expect("apply");
        assert!(
            report.errors.is_empty(),
            "backend errors: {:?}\nplan:\n{}",
            report.errors,
            report.plan
        );
        assert!(
            report.converged,
            "not converged; remaining: {:?}\nplan:\n{}",
            report.remaining, report.plan
        );
        assert!(report.results.iter().all(|r| r.ok), "{:?}", report.results);
        report
    }

    async fn apply(&self) -> ApplyReport {
        self.apply_with(&self.host).await
    }

    /// What is left to do, planned from a full read of the device and link.
    async fn plan_from_a_full_read(&self) -> Plan {
        self.m
            .plan(&self.admin, self.server, &self.host)
            .await
            .expect("plan")
    }

    async fn key(&self, peer: PeerId) -> PublicKey {
        self.m
            .get_peer(&self.admin, self.server, peer)
            .await
            .expect("peer")
            .public_key
    }

    async fn status_of(&self, key: &PublicKey) -> PeerStatus {
        let status = self
            .m
            .status(&self.admin, self.server, &self.host)
            .await
            .expect("status");
        assert!(status.exists, "the device does not exist");
        status
            .peers
            .into_iter()
            .find(|p| p.public_key == *key)
            .unwrap_or_else(|| panic!("peer {key} is not on the device"))
    }

    /// Render `peer`'s client config and bring it up in B.
    async fn connect_client(&self, lab: &mut Lab, peer: PeerId) {
        let cfg = self
            .m
            .client_config(&self.admin, self.server, peer)
            .await
            .expect("client config");
        assert!(cfg.complete, "the client config lacks its private key");
        lab.client_up(&cfg.text);
    }
}

/// Ping the server's tunnel addresses from B over both families; panics with ping's
/// output when one fails.
fn assert_pings(lab: &Lab) {
    for target in [SERVER_V6, SERVER_V4] {
        let out = lab.ping(target, 3);
        assert!(
            out.status.success(),
            "ping {target} across the tunnel failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Wait (bounded) until the first handshake has made both pings pass.
async fn tunnel_comes_up(lab: &Lab) {
    for target in [SERVER_V6, SERVER_V4] {
        assert!(
            lab.ping_until_answered(target, 50).await,
            "no answer from {target} across the tunnel"
        );
    }
    assert_pings(lab);
}

fn names_peer(item: &PlanItem, key: &PublicKey) -> bool {
    match item {
        PlanItem::AddPeer { public_key, .. }
        | PlanItem::UpdatePeer { public_key, .. }
        | PlanItem::RemovePeer { public_key, .. }
        | PlanItem::Unmanaged { public_key, .. } => public_key == key,
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_up_between_manager_server_and_wg_quick_client() {
    tunnel_up(Flavor::Userspace).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_tunnel_up_between_manager_server_and_wg_quick_client() {
    tunnel_up(Flavor::Kernel).await;
}

async fn tunnel_up(flavor: Flavor) {
    if !flavor.granted() {
        return;
    }
    let mut lab = Lab::new(flavor);
    let (s, ids) = Managed::new(&lab, &["alice"]).await;

    let report = s.apply().await;
    if flavor == Flavor::Userspace {
        lab.note_server_daemon()
            .expect("the backend started wireguard-go in A");
    }
    assert!(
        report.plan.items.contains(&PlanItem::CreateDevice),
        "{}",
        report.plan
    );
    assert!(!report.plan.device.replace_peers);
    // The link side came from KernelNetwork: both tunnel addresses are on the interface.
    let addrs = Lab::ip(
        &lab.ns_a,
        &["-o", "addr", "show", "dev", lab.server_iface.as_str()],
    );
    for want in [format!("{SERVER_V6}/64"), format!("{SERVER_V4}/24")] {
        assert!(addrs.contains(&want), "{want} missing in A:\n{addrs}");
    }
    // Nothing is left to do.
    assert!(s.plan_from_a_full_read().await.is_empty());

    s.connect_client(&mut lab, ids[0]).await;
    tunnel_comes_up(&lab).await;

    let alice = s.key(ids[0]).await;
    let st = s.status_of(&alice).await;
    assert!(st.managed && st.name.as_deref() == Some("alice"), "{st:?}");
    assert!(
        st.last_handshake.is_some_and(|t| t > 0),
        "no handshake: {st:?}"
    );
    assert!(
        st.rx_bytes > 0 && st.tx_bytes > 0,
        "no traffic counted: {st:?}"
    );
    let roamed = st
        .endpoint
        .expect("the server learnt the client's endpoint");
    assert_eq!(roamed.ip(), "fd77::2".parse::<IpAddr>().expect("ip"));
    eprintln!(
        "tunnel up: handshake at {:?}, rx {} tx {}",
        st.last_handshake, st.rx_bytes, st.tx_bytes
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_apply_keeps_a_live_tunnel_untouched() {
    incremental_apply(Flavor::Userspace).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_incremental_apply_keeps_a_live_tunnel_untouched() {
    incremental_apply(Flavor::Kernel).await;
}

async fn incremental_apply(flavor: Flavor) {
    if !flavor.granted() {
        return;
    }
    let mut lab = Lab::new(flavor);
    let (s, ids) = Managed::new(&lab, &["alice", "carol", "dave"]).await;
    let (alice, carol, dave) = (ids[0], ids[1], ids[2]);
    s.apply().await;
    if flavor == Flavor::Userspace {
        lab.note_server_daemon()
            .expect("the backend started wireguard-go in A");
    }
    s.connect_client(&mut lab, alice).await;
    tunnel_comes_up(&lab).await;

    let alice_key = s.key(alice).await;
    let carol_key = s.key(carol).await;
    let dave_key = s.key(dave).await;
    let before = s.status_of(&alice_key).await;
    let handshake = before.last_handshake.expect("a handshake happened");

    // Traffic to alice's tunnel while the server changes: 25 pings per family, 0.2 s apart.
    let ping6 = lab.ping_background(SERVER_V6, PINGS);
    let ping4 = lab.ping_background(SERVER_V4, PINGS);
    tokio::time::sleep(Duration::from_secs(1)).await;

    let bob =
        s.m.add_peer(
            &s.admin,
            s.server,
            NewPeer::new(PeerName::new("bob").expect("name")),
        )
        .await
        .expect("add bob");
    let extra: Vec<IpNet> = vec![
        "fd20:c::/64".parse().expect("net"),
        "10.99.0.0/24".parse().expect("net"),
    ];
    s.m.update_peer(
        &s.admin,
        s.server,
        carol,
        PeerUpdate {
            extra_allowed_ips: Some(extra.clone()),
            ..PeerUpdate::default()
        },
    )
    .await
    .expect("give carol a network");
    s.m.remove_peer(&s.admin, s.server, dave)
        .await
        .expect("remove dave");
    let report = s.apply().await;

    let mut ping_out = Vec::new();
    for p in [ping6, ping4] {
        ping_out.push(p.wait_with_output().await.expect("ping finished"));
    }

    // The plan: exactly bob added, carol updated, dave removed (and carol's routes);
    // alice never named, peers never replaced.
    let plan = &report.plan;
    assert!(!plan.device.replace_peers, "{plan}");
    assert!(
        !plan.items.iter().any(|i| names_peer(i, &alice_key)),
        "the plan touches alice:\n{plan}"
    );
    assert!(
        !plan.device.peers.iter().any(|d| d.public_key == alice_key),
        "the device delta touches alice: {:?}",
        plan.device.peers
    );
    assert_eq!(plan.device.peers.len(), 3, "{plan}");
    assert!(
        plan.items.iter().any(
            |i| matches!(i, PlanItem::AddPeer { public_key, .. } if *public_key == bob.public_key)
        ),
        "{plan}"
    );
    assert!(
        plan.items.iter().any(
            |i| matches!(i, PlanItem::UpdatePeer { public_key, .. } if *public_key == carol_key)
        ),
        "{plan}"
    );
    assert!(
        plan.items.iter().any(
            |i| matches!(i, PlanItem::RemovePeer { public_key, .. } if *public_key == dave_key)
        ),
        "{plan}"
    );
    for net in &extra {
        assert!(
            plan.items.contains(&PlanItem::AddRoute { route: *net }),
            "{plan}"
        );
    }

    // No ping lost, in either family.
    for (target, out) in [SERVER_V6, SERVER_V4].iter().zip(&ping_out) {
        let (sent, received) = ping_summary(&out.stdout);
        assert_eq!(
            (sent, received),
            (PINGS, PINGS),
            "pings to {target} lost during apply:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    // alice's session survived: same handshake, counters only grew.
    let after = s.status_of(&alice_key).await;
    assert_eq!(after.last_handshake, Some(handshake), "alice re-handshaked");
    assert!(
        after.rx_bytes > before.rx_bytes && after.tx_bytes > before.tx_bytes,
        "alice's counters reset or stood still: before {before:?}, after {after:?}"
    );

    // wireguard-go and the kernel acknowledged every change of a plan made from what
    // the first apply verified: no read-back. A plan from a full read of the real
    // device and link has nothing left, so the acknowledged state was the real one.
    assert!(
        report.converged && !report.read_back,
        "{:?}",
        report.remaining
    );
    let fresh = s.plan_from_a_full_read().await;
    assert!(
        fresh.is_empty(),
        "left after an acknowledged apply:\n{fresh}"
    );

    // The device holds what the store says.
    let live =
        s.m.status(&s.admin, s.server, &s.host)
            .await
            .expect("status");
    let keys: Vec<PublicKey> = live.peers.iter().map(|p| p.public_key).collect();
    assert!(
        keys.contains(&bob.public_key) && !keys.contains(&dave_key),
        "{keys:?}"
    );
    let carol_live = live
        .peers
        .iter()
        .find(|p| p.public_key == carol_key)
        .expect("carol");
    for net in &extra {
        assert!(carol_live.allowed_ips.contains(net), "{carol_live:?}");
    }
    let routes = Lab::ip(
        &lab.ns_a,
        &["route", "show", "dev", lab.server_iface.as_str()],
    );
    let routes6 = Lab::ip(
        &lab.ns_a,
        &["-6", "route", "show", "dev", lab.server_iface.as_str()],
    );
    assert!(
        routes.contains("10.99.0.0/24") && routes6.contains("fd20:c::/64"),
        "{routes}{routes6}"
    );
    eprintln!(
        "incremental apply: alice handshake {handshake} kept, rx {} -> {}, tx {} -> {}; {PINGS}+{PINGS} pings, none lost",
        before.rx_bytes, after.rx_bytes, before.tx_bytes, after.tx_bytes
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_is_restored_and_a_deleted_interface_recreated() {
    drift_and_recreation(Flavor::Userspace).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_drift_is_restored_and_a_deleted_interface_recreated() {
    drift_and_recreation(Flavor::Kernel).await;
}

async fn drift_and_recreation(flavor: Flavor) {
    if !flavor.granted() {
        return;
    }
    let mut lab = Lab::new(flavor);
    let (s, ids) = Managed::new(&lab, &["alice", "carol"]).await;
    let (alice, carol) = (ids[0], ids[1]);
    s.apply().await;
    if flavor == Flavor::Userspace {
        lab.note_server_daemon()
            .expect("the backend started wireguard-go in A");
    }
    s.connect_client(&mut lab, alice).await;
    tunnel_comes_up(&lab).await;
    let carol_key = s.key(carol).await;
    let carol_desired = s.status_of(&carol_key).await;
    let carol_keepalive = s
        .backend_peer(&lab, &carol_key)
        .await
        .expect("carol on the device")
        .persistent_keepalive;
    assert_ne!(carol_keepalive, 7, "the drift below must be a change");

    // Out of band, in A: carol's allowed IPs and keepalive change; a stranger appears.
    let stranger = PrivateKey::generate().public_key();
    let iface = lab.server_iface.to_string();
    let iface = iface.as_str();
    let carol_b64 = carol_key.to_base64();
    let stranger_b64 = stranger.to_base64();
    for args in [
        vec![
            "wg",
            "set",
            iface,
            "peer",
            carol_b64.as_str(),
            "allowed-ips",
            "fd30::/64",
            "persistent-keepalive",
            "7",
        ],
        vec![
            "wg",
            "set",
            iface,
            "peer",
            stranger_b64.as_str(),
            "allowed-ips",
            "fd40::1/128",
        ],
    ] {
        let out = Lab::exec(&lab.ns_a, &args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let drifted = s.status_of(&carol_key).await;
    assert_ne!(drifted.allowed_ips, carol_desired.allowed_ips);

    // Policy report: carol restored, the stranger reported and left alone.
    let report = s.apply().await;
    let plan = &report.plan;
    assert!(!plan.device.replace_peers, "{plan}");
    assert!(
        plan.items.iter().any(
            |i| matches!(i, PlanItem::UpdatePeer { public_key, .. } if *public_key == carol_key)
        ),
        "{plan}"
    );
    assert!(
        plan.items.contains(&PlanItem::Unmanaged {
            public_key: stranger,
            remove: false
        }),
        "{plan}"
    );
    let restored = s.status_of(&carol_key).await;
    assert_eq!(restored.allowed_ips, carol_desired.allowed_ips);
    let carol_live = s
        .backend_peer(&lab, &carol_key)
        .await
        .expect("carol on the device");
    assert_eq!(
        carol_live.persistent_keepalive, carol_keepalive,
        "keepalive not restored"
    );
    assert!(
        !s.status_of(&stranger).await.managed,
        "the stranger is reported as unmanaged"
    );

    // Policy remove: the stranger goes.
    let remover = s.host.clone().with_drift(DriftPolicy::Remove);
    let report = s.apply_with(&remover).await;
    assert!(
        report.plan.items.contains(&PlanItem::Unmanaged {
            public_key: stranger,
            remove: true
        }),
        "{}",
        report.plan
    );
    let status =
        s.m.status(&s.admin, s.server, &s.host)
            .await
            .expect("status");
    assert!(
        !status.peers.iter().any(|p| p.public_key == stranger),
        "the stranger is still there"
    );
    assert_pings(&lab);

    // The interface is deleted out of band (wireguard-go loses its TUN and exits).
    let old_pid = lab.note_server_daemon();
    let old_instance = lab
        .backend
        .device_instance(&lab.server_iface)
        .await
        .expect("instance");
    Lab::ip(&lab.ns_a, &["link", "del", iface]);
    let backend = lab.backend.clone();
    let name = lab.server_iface.clone();
    if let Some(old_pid) = old_pid {
        assert!(
            eventually(Duration::from_secs(10), async || process_gone(old_pid)).await,
            "wireguard-go (pid {old_pid}) outlived its interface"
        );
    }
    assert!(
        eventually(Duration::from_secs(10), async || matches!(
            backend.read_device(&name).await,
            Ok(None)
        ))
        .await,
        "a deleted interface must read as no device"
    );
    let status =
        s.m.status(&s.admin, s.server, &s.host)
            .await
            .expect("status");
    assert!(!status.exists && status.missing.len() == 2, "{status:?}");

    // The next apply recreates it: a new daemon, the whole configuration, the link.
    let report = s.apply().await;
    assert!(
        report.plan.items.contains(&PlanItem::CreateDevice),
        "{}",
        report.plan
    );
    let new_pid = lab.note_server_daemon();
    assert_eq!(new_pid.is_some(), flavor == Flavor::Userspace);
    if flavor == Flavor::Userspace {
        assert_ne!(new_pid, old_pid, "a new daemon");
    }
    let new_instance = lab
        .backend
        .device_instance(&lab.server_iface)
        .await
        .expect("instance");
    if flavor == Flavor::Kernel {
        assert!(old_instance.is_some() && new_instance.is_some() && new_instance != old_instance);
    }
    // The client still holds a session with the old device; it re-handshakes by itself
    // once it stops hearing back (WireGuard's timers), then traffic flows again.
    tunnel_comes_up(&lab).await;
    let alice_key = s.key(alice).await;
    let st = s.status_of(&alice_key).await;
    assert!(st.last_handshake.is_some() && st.rx_bytes > 0, "{st:?}");
    eprintln!("drift ({flavor:?}): restored, stranger reported then removed; interface recreated (daemon {old_pid:?} -> {new_pid:?}, instance {old_instance:?} -> {new_instance:?}), tunnel back");
}

impl Managed {
    /// The live peer as the backend reads it (keepalive is not part of `PeerStatus`).
    async fn backend_peer(
        &self,
        lab: &Lab,
        key: &PublicKey,
    ) -> Option<wgm_core::backend::PeerState> {
        let dev = lab
            .backend
            .read_device(&lab.server_iface)
            .await
            .expect("read device")?;
        dev.peers.get(key).cloned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_daemon_is_noticed_before_an_incremental_apply() {
    let Some(_netns) = require(Suite::Netns, TOOLS) else {
        return;
    };
    let mut lab = Lab::new(Flavor::Userspace);
    let (s, _) = Managed::new(&lab, &["alice", "carol"]).await;
    s.apply().await;
    let old_pid = lab.note_server_daemon().expect("daemon running");

    // The daemon dies and another one comes up on the same name: an empty device, its
    // link down without addresses. The manager still holds what it verified before.
    kill(old_pid);
    // Gone for good: reaped (not only a zombie whose threads still exit) and its socket
    // no longer answering, else `create_device` would still see it.
    let backend = lab.userspace.clone().expect("userspace");
    let name = lab.server_iface.clone();
    assert!(
        eventually(Duration::from_secs(10), async || process_gone(old_pid)
            && backend.child_pid(&name).is_none()
            && matches!(backend.read_device(&name).await, Ok(None)))
        .await,
        "wireguard-go (pid {old_pid}) did not die"
    );
    backend
        .create_device(&lab.server_iface)
        .await
        .expect("a new daemon");
    let new_pid = lab.note_server_daemon().expect("the new daemon");
    assert_ne!(new_pid, old_pid);

    // One peer added in the store. Planned from the old snapshot, the apply would send
    // only that peer; the device's new instance makes it read the device first.
    s.m.add_peer(
        &s.admin,
        s.server,
        NewPeer::new(PeerName::new("bob").expect("name")),
    )
    .await
    .expect("add bob");
    let report = s.apply().await;
    let added = report
        .plan
        .items
        .iter()
        .filter(|i| matches!(i, PlanItem::AddPeer { .. }))
        .count();
    assert_eq!(added, 3, "every peer restored:\n{}", report.plan);
    assert!(
        report.plan.items.contains(&PlanItem::SetUp),
        "{}",
        report.plan
    );
    let fresh = s.plan_from_a_full_read().await;
    assert!(fresh.is_empty(), "left after the apply:\n{fresh}");
}
