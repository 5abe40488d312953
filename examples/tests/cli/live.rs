//! `plan`, `apply`, `status`, `reconcile`. Reading needs no privilege (a missing device
//! reads as absent); changing a live device runs in a private network namespace and is
//! opt-in with `WGM_TEST_NETNS=1` (root, `ip`, `wireguard-go`, `wg`; with the switch on,
//! anything missing fails the test).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use wgm_test_support::{require, Suite};

use crate::harness::{check_failure, Env};

/// An interface name no other test or process uses.
fn iface(tag: &str) -> String {
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
fn the_kernel_backend_says_it_is_not_available_yet() {
    let env = Env::new();
    env.server("office", 51820);
    for cmd in ["plan", "apply", "status", "reconcile"] {
        let r = env.run(&[cmd, "office", "--backend", "kernel"]);
        check_failure(&[cmd], &r, 6);
        assert!(
            r.stderr
                .contains("kernel WireGuard backend is not available yet"),
            "{}",
            r.stderr
        );
    }
    let r = env.run(&["apply", "office", "--backend", "boringtun"]);
    check_failure(&["apply"], &r, 2);
    assert!(r.stderr.contains("backend"));
    env.fails(&["reconcile", "office", "--interval", "0"], 2);
    env.fails(&["apply", "office", "--host", "a b"], 2);
}

/// A network namespace and the devices in it, removed on drop.
struct Netns {
    name: String,
    ifaces: Vec<String>,
}

impl Netns {
    fn new(tag: &str) -> Netns {
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

    fn wg_peers(&self, iface: &str) -> Vec<String> {
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
    let out = in_ns(&["--json", "apply", "office"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["converged"], true);
    assert_eq!(ns.wg_peers(&name).len(), 2);
    // Applying again changes nothing.
    let out = in_ns(&["apply", "office"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("up to date"));
    let out = in_ns(&["--json", "status", "office"]).output().unwrap();
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["exists"], true);
    assert_eq!(status["listen_port"], 51820);
    assert_eq!(status["peers"].as_array().unwrap().len(), 2);

    // reconcile picks up a new peer and stops cleanly on SIGTERM.
    let child = in_ns(&["reconcile", "office", "--interval", "1"])
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
    let out = in_ns(&["apply", "office"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("- device"));
    let out = in_ns(&["--json", "status", "office"]).output().unwrap();
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["exists"], false);
    assert!(!std::path::Path::new(&format!("/var/run/wireguard/{name}.sock")).exists());
}
