//! `plan`, `apply`, `status`, `reconcile`. Reading needs no privilege (a missing device
//! reads as absent); changing a live device runs in a private network namespace and is
//! opt-in with `WGM_TEST_NETNS=1` for wireguard-go (root, `ip`, `wireguard-go`, `wg`)
//! and `WGM_TEST_KERNEL=1` for kernel WireGuard (in the VM of `.ci/vm`); with a switch
//! on, anything missing fails the test.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use wgm_test_support::{require, Suite};

use crate::harness::{check_failure, Env};

/// An interface name no other test or process uses.
pub(crate) fn iface(tag: &str) -> String {
    format!("wgm{tag}{}", std::process::id() % 100_000)
}

#[test]
fn plan_status_and_dry_run_read_without_changing_anything() {
    let env = Env::new();
    let name = iface("p");
    env.ok(&[
        "server",
        "create",
        "office",
        "--listen-port",
        "51820",
        "--interface",
        &name,
        "--ipv4",
        "10.8.0.0/24",
    ]);
    env.ok(&["peer", "add", "office", "alice"]);
    let plan = env.json(&["plan", "office", "--backend", "userspace", "--host", "h1"]);
    assert_eq!(plan["interface"], name.as_str());
    assert_eq!(plan["revision"], 2);
    let ops: Vec<&str> = plan["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["op"].as_str().unwrap())
        .collect();
    assert!(
        ops.contains(&"create_device") && ops.contains(&"add_peer"),
        "{ops:?}"
    );
    let text = env.ok(&["plan", "office"]);
    assert!(
        text.contains("+ device") && text.contains("+ peer alice"),
        "{text}"
    );
    let dry = env.json(&["apply", "office", "--dry-run"]);
    assert_eq!(dry["executed"], false);
    assert_eq!(dry["plan"]["items"], plan["items"]);
    let status = env.json(&["status", "office"]);
    assert_eq!(status["exists"], false);
    assert_eq!(status["missing"][0], "alice");
    let r = env.run(&["status", "office"]);
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("not present"), "{}", r.stdout);
    assert!(r.stderr.contains("alice"), "{}", r.stderr);
    assert!(!std::path::Path::new(&format!("/var/run/wireguard/{name}.sock")).exists());
}

#[test]
fn unknown_backend_bad_host_and_zero_interval_are_refused() {
    let env = Env::new();
    env.server("office", 51820);
    let r = env.run(&["apply", "office", "--backend", "boringtun"]);
    check_failure(&["apply"], &r, 2);
    assert!(r.stderr.contains("backend"));
    env.fails(&["reconcile", "office", "--interval", "0"], 2);
    env.fails(&["apply", "office", "--host", "a b"], 2);
}

/// A network namespace and the devices in it, removed on drop.
pub(crate) struct Netns {
    pub(crate) name: String,
    pub(crate) ifaces: Vec<String>,
}

impl Netns {
    pub(crate) fn new(tag: &str) -> Netns {
        let name = format!("wgm-cli-{tag}-{}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap()
            .success();
        assert!(ok, "ip netns add");
        let ok = Command::new("ip")
            .args(["-n", &name, "link", "set", "lo", "up"])
            .status()
            .unwrap()
            .success();
        assert!(ok);
        Netns {
            name,
            ifaces: Vec::new(),
        }
    }

    pub(crate) fn wg_peers(&self, iface: &str) -> Vec<String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "wg", "show", iface, "peers"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // wireguard-go exits when its socket goes; anything left in our namespace was
        // started by this test.
        for i in &self.ifaces {
            let _ = std::fs::remove_file(format!("/var/run/wireguard/{i}.sock"));
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let out = Command::new("ip")
                .args(["netns", "pids", &self.name])
                .output();
            let pids: Vec<String> = out
                .map(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .split_whitespace()
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            if pids.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                for pid in pids {
                    let _ = Command::new("kill").arg(&pid).status();
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

#[test]
fn apply_status_and_reconcile_drive_wireguard_go_in_a_namespace() {
    let Some(_netns) = require(Suite::Netns, &["ip", "wireguard-go", "wg"]) else {
        return;
    };
    drive_in_a_namespace("userspace");
}

/// The same on kernel WireGuard (suite `kernel`: in the VM of `.ci/vm`), and there
/// `--backend auto` (the default) picks the kernel.
#[test]
fn apply_status_and_reconcile_drive_kernel_wireguard_in_a_namespace() {
    let Some(_kernel) = require(Suite::Kernel, &["ip", "wg"]) else {
        return;
    };
    drive_in_a_namespace("kernel");
}

/// `--backend kernel` where the kernel has no WireGuard fails with exit code 6 on every
/// live command, naming the module and the alternative; `auto` then falls back to
/// wireguard-go. Where the kernel has WireGuard, reading through it works instead.
#[test]
fn backend_kernel_without_the_module_names_it_and_the_alternative() {
    let env = Env::new();
    env.ok(&[
        "server",
        "create",
        "office",
        "--listen-port",
        "51820",
        "--interface",
        &iface("k"),
    ]);
    let r = env.run(&["--json", "status", "office", "--backend", "kernel"]);
    if r.code == 0 {
        // This kernel has WireGuard: the device simply does not exist yet.
        let status: Value = serde_json::from_str(&r.stdout).unwrap();
        assert_eq!(status["exists"], false);
        return;
    }
    for cmd in ["plan", "apply", "status", "reconcile"] {
        let r = env.run(&[cmd, "office", "--backend", "kernel"]);
        check_failure(&[cmd], &r, 6);
        assert!(
            r.stderr.contains("module `wireguard`"),
            "{cmd}: {}",
            r.stderr
        );
        assert!(
            r.stderr.contains("--backend userspace"),
            "{cmd}: {}",
            r.stderr
        );
    }
    // auto: the userspace backend, which reads an absent device.
    let status = env.json(&["status", "office", "--backend", "auto"]);
    assert_eq!(status["exists"], false);
}

fn drive_in_a_namespace(backend: &str) {
    let env = Env::new();
    let mut ns = Netns::new("apply");
    let name = iface("a");
    ns.ifaces.push(name.clone());
    env.ok(&[
        "server",
        "create",
        "office",
        "--listen-port",
        "51820",
        "--interface",
        &name,
        "--ipv4",
        "10.8.0.0/24",
        "--ipv6",
        "fd12:3456:789a:1::/64",
    ]);
    env.ok(&["peer", "add", "office", "alice"]);
    env.ok(&["peer", "add", "office", "bob"]);
    let in_ns = |args: &[&str]| {
        let c = env.cmd(args);
        let prog = c.get_program().to_owned();
        let argv: Vec<_> = c.get_args().map(ToOwned::to_owned).collect();
        let mut outer = Command::new("ip");
        outer.args(["netns", "exec", &ns.name]).arg(prog).args(argv);
        for (k, v) in c.get_envs() {
            match v {
                Some(v) => outer.env(k, v),
                None => outer.env_remove(k),
            };
        }
        outer.env("WGM_HOST", "test-host");
        outer
    };
    let out = in_ns(&["--json", "apply", "office", "--backend", backend])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["converged"], true);
    assert_eq!(ns.wg_peers(&name).len(), 2);
    // The device is of the kind asked for: wireguard-go's socket, or a kernel link.
    let socket = std::path::Path::new(&format!("/var/run/wireguard/{name}.sock")).exists();
    assert_eq!(socket, backend == "userspace", "UAPI socket of {name}");
    // Applying again changes nothing.
    let out = in_ns(&["apply", "office", "--backend", backend])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("up to date"));
    if backend == "kernel" {
        // auto finds the kernel's device (userspace would find no socket).
        let out = in_ns(&["plan", "office"]).output().unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).contains("up to date"));
    }
    let out = in_ns(&["--json", "status", "office", "--backend", backend])
        .output()
        .unwrap();
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["exists"], true);
    assert_eq!(status["listen_port"], 51820);
    assert_eq!(status["peers"].as_array().unwrap().len(), 2);

    // reconcile picks up a new peer and stops cleanly on SIGTERM.
    let child = in_ns(&[
        "reconcile",
        "office",
        "--interval",
        "1",
        "--backend",
        backend,
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    env.ok(&["peer", "add", "office", "carol"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while ns.wg_peers(&name).len() != 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let out = child.wait_with_output().unwrap();
    assert_eq!(ns.wg_peers(&name).len(), 3, "reconcile did not add carol");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("+ peer carol"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("stopped"));

    // An inactive server's interface is removed by the next apply, daemon and all.
    env.ok(&["server", "set", "office", "--active", "no"]);
    let out = in_ns(&["apply", "office", "--backend", backend])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("- device"));
    let out = in_ns(&["--json", "status", "office", "--backend", backend])
        .output()
        .unwrap();
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["exists"], false);
    assert!(!std::path::Path::new(&format!("/var/run/wireguard/{name}.sock")).exists());
    let links = Command::new("ip")
        .args(["-n", &ns.name, "-o", "link", "show"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&links.stdout).contains(&name),
        "the interface is gone"
    );
}
