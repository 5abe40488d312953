//! The kernel's WireGuard, driven by the tools everybody uses (`ip`, `wg`) in a
//! throw-away network namespace (named `wgmw-<pid>-<n>-<tag>`, deleted by a Drop guard on
//! every exit path): the smoke test that the machine running the `kernel` suite can
//! create, configure, read back and delete a kernel WireGuard device at all, before the
//! backend's own tests rely on it.
//!
//! Opt-in: set `WGM_TEST_KERNEL=1` and run as root on a kernel with the `wireguard`
//! module (with the switch on, a missing module, root or tool fails the test); otherwise
//! the binary prints one `SKIPPED` line and its test passes without running. CI runs it
//! in the VM that `.ci/vm` boots (listed in `.ci/vm-tests`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::Value;
use wgm_test_support::{require, Suite};

/// The programs this test runs.
const TOOLS: &[&str] = &["ip", "wg"];

/// A private key (`wg genkey`) and its public key (`wg pubkey`).
const PRIVATE_KEY: &str = "4ESYjeBh+K4BQlJRpo1fvpdytA19bPAl0UDgMhlLi3U=";
const PUBLIC_KEY: &str = "QZIFwtNWyTxyto13OUh1OdPsVRheOd1NnYFfvCvhKnE=";

/// Runs `program` with `args`; returns its exit status's success and its stdout, stderr.
fn run(program: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `program` with `args`, panicking with its stderr when it fails; returns stdout.
fn must(program: &str, args: &[&str]) -> String {
    let (ok, stdout, stderr) = run(program, args);
    assert!(ok, "{program} {}: {stderr}", args.join(" "));
    stdout
}

/// A unique name for this process: `<prefix>-<pid>-<n>-<tag>`.
fn unique(prefix: &str, tag: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}-{tag}", std::process::id())
}

/// A network namespace that exists for the life of the value.
struct Netns {
    name: String,
}

impl Netns {
    fn new(tag: &str) -> Self {
        let name = unique("wgmw", tag);
        must("ip", &["netns", "add", &name]);
        Netns { name }
    }

    /// `ip -n NS ARGS…`: success, stdout, stderr.
    fn ip(&self, args: &[&str]) -> (bool, String, String) {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// `ip -n NS -j ARGS…`, parsed; panics when `ip` fails.
    fn ip_json(&self, args: &[&str]) -> Value {
        let mut all = vec!["-n", self.name.as_str(), "-j"];
        all.extend_from_slice(args);
        let text = must("ip", &all);
        if text.trim().is_empty() {
            return Value::Array(vec![]);
        }
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("ip -j prints JSON: {e}: {text}"))
    }

    /// `wg ARGS…` inside the namespace; panics when it fails.
    fn wg(&self, args: &[&str]) -> String {
        let mut all = vec!["netns", "exec", self.name.as_str(), "wg"];
        all.extend_from_slice(args);
        must("ip", &all)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Ignore the outcome: the guard must not panic while a failing test unwinds.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A file that exists for the life of the value (`wg set` reads keys from files).
struct TempFile {
    path: PathBuf,
}

impl TempFile {
    fn new(tag: &str, contents: &str) -> Self {
        let path = std::env::temp_dir().join(unique("wgm-kernel-module", tag));
        std::fs::write(&path, contents)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        TempFile { path }
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        // Ignore the outcome, as above.
        let _ = std::fs::remove_file(&self.path);
    }
}

#[test]
fn a_kernel_wireguard_device_is_created_configured_read_back_and_deleted() {
    let Some(_kernel) = require(Suite::Kernel, TOOLS) else {
        return;
    };
    let ns = Netns::new("smoke");
    let dev = "wgsmoke0";

    let (ok, _, stderr) = ns.ip(&["link", "add", dev, "type", "wireguard"]);
    assert!(ok, "ip link add {dev} type wireguard: {stderr}");
    let links = ns.ip_json(&["-d", "link", "show", "dev", dev]);
    assert_eq!(
        links[0]["linkinfo"]["info_kind"], "wireguard",
        "ip -d link show: {links}"
    );

    let key = TempFile::new("private-key", &format!("{PRIVATE_KEY}\n"));
    let key_path = key.path().to_str().expect("temp paths are UTF-8");
    ns.wg(&["set", dev, "private-key", key_path, "listen-port", "51820"]);

    // The first line of a dump is the interface:
    // private-key, public-key, listen-port, fwmark (tab-separated); no peers follow.
    let dump = ns.wg(&["show", dev, "dump"]);
    let lines: Vec<&str> = dump.lines().collect();
    assert_eq!(lines.len(), 1, "wg show {dev} dump: {dump}");
    let fields: Vec<&str> = lines[0].split('\t').collect();
    assert_eq!(
        fields,
        [PRIVATE_KEY, PUBLIC_KEY, "51820", "off"],
        "wg show {dev} dump: {dump}"
    );

    let (ok, _, stderr) = ns.ip(&["link", "del", dev]);
    assert!(ok, "ip link del {dev}: {stderr}");
    let (ok, _, _) = ns.ip(&["link", "show", "dev", dev]);
    assert!(!ok, "{dev} still exists after ip link del");
    let left = ns.ip_json(&["link", "show", "type", "wireguard"]);
    assert_eq!(left, Value::Array(vec![]), "wireguard links left: {left}");
}
