//! What the kernel WireGuard tests share: running the tools, unique names, and a
//! throw-away network namespace (deleted by a Drop guard on every exit path).

// Each test binary that includes this module uses part of it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::Value;

/// Runs `program` with `args`; returns its exit status's success and its stdout, stderr.
pub fn run(program: &str, args: &[&str]) -> (bool, String, String) {
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
pub fn must(program: &str, args: &[&str]) -> String {
    let (ok, stdout, stderr) = run(program, args);
    assert!(ok, "{program} {}: {stderr}", args.join(" "));
    stdout
}

/// A unique name for this process: `<prefix>-<pid>-<n>-<tag>`.
pub fn unique(prefix: &str, tag: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}-{tag}", std::process::id())
}

/// A network namespace that exists for the life of the value.
pub struct Netns {
    /// The namespace's name.
    pub name: String,
}

impl Netns {
    /// A namespace named `wgmw-<pid>-<n>-<tag>`.
    pub fn new(tag: &str) -> Self {
        let name = unique("wgmw", tag);
        must("ip", &["netns", "add", &name]);
        Netns { name }
    }

    /// Its file, for `in_netns` constructors.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    /// `ip netns exec NS program args…`; panics when it fails; returns stdout.
    pub fn exec(&self, program: &str, args: &[&str]) -> String {
        let mut all = vec!["netns", "exec", self.name.as_str(), program];
        all.extend_from_slice(args);
        must("ip", &all)
    }

    /// `ip -n NS ARGS…`: success, stdout, stderr.
    pub fn ip(&self, args: &[&str]) -> (bool, String, String) {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// `ip -n NS ARGS…`; panics when it fails; returns stdout.
    pub fn ip_ok(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        must("ip", &all)
    }

    /// `ip -n NS -j ARGS…`, parsed; panics when `ip` fails.
    pub fn ip_json(&self, args: &[&str]) -> Value {
        let mut all = vec!["-n", self.name.as_str(), "-j"];
        all.extend_from_slice(args);
        let text = must("ip", &all);
        if text.trim().is_empty() {
            return Value::Array(vec![]);
        }
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("ip -j prints JSON: {e}: {text}"))
    }

    /// `wg ARGS…` inside the namespace; panics when it fails.
    pub fn wg(&self, args: &[&str]) -> String {
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
