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

mod common;

use std::path::{Path, PathBuf};

use common::{unique, Netns};
use serde_json::Value;
use wgm_test_support::{require, Suite};

/// The programs this test runs.
const TOOLS: &[&str] = &["ip", "wg"];

/// A private key (`wg genkey`) and its public key (`wg pubkey`).
const PRIVATE_KEY: &str = "4ESYjeBh+K4BQlJRpo1fvpdytA19bPAl0UDgMhlLi3U=";
const PUBLIC_KEY: &str = "QZIFwtNWyTxyto13OUh1OdPsVRheOd1NnYFfvCvhKnE=";

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
